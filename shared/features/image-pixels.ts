/** Pixel operations of the image extractor: Hounsfield window and bilinear resampling. */

/** Bilinear resampling with pixel centres aligned (`align_corners=False`), no antialiasing. */
export function resampleBilinear(
  src: Float32Array,
  rows: number,
  columns: number,
  outRows: number,
  outColumns: number,
): Float32Array {
  if (rows === outRows && columns === outColumns) return src;
  const out = new Float32Array(outRows * outColumns);
  const sy = rows / outRows;
  const sx = columns / outColumns;
  const x0s = new Int32Array(outColumns);
  const x1s = new Int32Array(outColumns);
  const fxs = new Float32Array(outColumns);
  for (let x = 0; x < outColumns; x++) {
    const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), columns - 1);
    const x0 = Math.floor(fx);
    x0s[x] = x0;
    x1s[x] = Math.min(x0 + 1, columns - 1);
    fxs[x] = fx - x0;
  }
  for (let y = 0; y < outRows; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), rows - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, rows - 1);
    const wy = fy - y0;
    const r0 = y0 * columns;
    const r1 = y1 * columns;
    for (let x = 0; x < outColumns; x++) {
      const a = x0s[x] as number;
      const b = x1s[x] as number;
      const wx = fxs[x] as number;
      const top = (src[r0 + a] as number) * (1 - wx) + (src[r0 + b] as number) * wx;
      const bottom = (src[r1 + a] as number) * (1 - wx) + (src[r1 + b] as number) * wx;
      out[y * outColumns + x] = top * (1 - wy) + bottom * wy;
    }
  }
  return out;
}

/**
 * Window centre/width on Hounsfield units, in place: `unit` maps `[c − w/2, c + w/2]` linearly
 * to `[0, 1]` and clamps; `none` clamps to that HU range.
 */
export function applyWindow(
  hu: Float32Array,
  window: { readonly center: number; readonly width: number },
  normalisation: 'unit' | 'none',
): Float32Array {
  const lower = window.center - window.width / 2;
  const upper = window.center + window.width / 2;
  const out = new Float32Array(hu.length);
  for (let i = 0; i < hu.length; i++) {
    const v = Math.min(Math.max(hu[i] as number, lower), upper);
    out[i] = normalisation === 'unit' ? (v - lower) / window.width : v;
  }
  return out;
}
