/** AWS HealthLake endpoint names, without the SigV4 signer (`sigv4.ts` loads only in SigV4 mode). */

/** The region of a HealthLake endpoint URL, or undefined for another host. */
export function healthLakeRegion(baseUrl: string): string | undefined {
  try {
    return /^healthlake(?:-fips)?\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com$/.exec(
      new URL(baseUrl).hostname,
    )?.[1];
  } catch {
    return undefined;
  }
}
