/**
 * The part of `@lhncbc/ucum-lhc` 7.x we use (the package ships no types). See
 * `node_modules/@lhncbc/ucum-lhc/source-cjs/ucumLhcUtils.js`.
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
  export interface UcumLhcUtilsInstance {
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
