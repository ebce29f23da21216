/**
 * Idempotency keys and the deterministic identifiers derived from them, so that the same
 * model, patient and input versions always give the same key and the same bundle.
 */
import { createHash, hash } from 'node:crypto';
import type { VersionedReference } from '../types.js';

/** SHA-256 of UTF-8 text: one-shot `crypto.hash` where Node has it (20.12+), the same digest as createHash. */
const sha256: (text: string) => Buffer =
  typeof hash === 'function'
    ? (text) => hash('sha256', text, 'buffer')
    : (text) => createHash('sha256').update(text, 'utf8').digest();

/**
 * SHA-256 (hex) of the model id, version, patient and the sorted, de-duplicated versioned
 * input references. The parts are JSON-encoded, so no choice of separator can make two
 * different inputs collide.
 */
export function idempotencyKey(
  modelId: string,
  version: string,
  patient: string,
  inputs: readonly VersionedReference[],
): string {
  const sorted = [...new Set(inputs)].sort();
  return sha256(JSON.stringify([modelId, version, patient, sorted])).toString('hex');
}

/**
 * A UUID (RFC 9562 version 8, name-based on SHA-256) for `name` within `namespace`: the same
 * arguments always give the same UUID.
 */
export function deterministicUuid(namespace: string, name: string): string {
  const bytes = sha256(JSON.stringify([namespace, name])).subarray(0, 16);
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x80; // version 8
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80; // variant 10
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
