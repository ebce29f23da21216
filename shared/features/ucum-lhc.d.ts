/**
 * The part of `@lhncbc/ucum-lhc` 7.x we use (the package ships no types): only
 * `scripts/ucum-table.generate.ts` and the tests load it; the Lambdas convert through the table it
 * generates. See `node_modules/@lhncbc/ucum-lhc/source-cjs/ucumLhcUtils.js` and `unit.js`.
 */
declare module '@lhncbc/ucum-lhc' {
  export interface UcumConvertResult {
    /** `succeeded`, `failed` (unknown or incommensurable units), or `error` (bad arguments). */
    status: 'succeeded' | 'failed' | 'error';
    toVal: number | null;
    msg: string[];
  }
  export interface UcumValidateResult {
    status: 'valid' | 'invalid' | 'error';
    ucumCode: string | null;
    msg: string[];
  }
  /** A parsed unit: the fields `Unit.convertFrom` and `Unit.convertMolMass` read. */
  export interface UcumUnit {
    magnitude_: number;
    dim_: { dimVec_: number[] | null } | null;
    moleExp_: number;
    equivalentExp_: number;
    isArbitrary_: boolean;
    cnv_: string | null;
    cnvPfx_: number;
  }
  export interface UcumLhcUtilsInstance {
    getSpecifiedUnit(
      uName: string,
      valConv: 'validate' | 'convert',
      suggest?: boolean,
    ): { unit: UcumUnit | null };
    convertUnitTo(
      fromUnitCode: string,
      fromVal: number,
      toUnitCode: string,
      options?: { suggest?: boolean; molecularWeight?: number | null; charge?: number | null },
    ): UcumConvertResult;
    validateUnitString(uStr: string, suggest?: boolean, valConv?: string): UcumValidateResult;
  }
  const ucum: {
    UcumLhcUtils: { getInstance(): UcumLhcUtilsInstance };
  };
  export default ucum;
}
