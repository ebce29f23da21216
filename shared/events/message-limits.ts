/**
 * Sizes of the resource-event queue message (`resource-event.ts`), in a module without its
 * schemas: the sender (`functions/notify`) needs the limit, not the consumer's parsers.
 */

/**
 * The largest focus resource (serialized JSON, bytes) carried in a queue message: a quarter
 * of SQS's 256 KiB message limit, so a batch of messages stays far from it too.
 */
export const MAX_CARRIED_RESOURCE_BYTES = 64 * 1024;
