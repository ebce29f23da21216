/**
 * Sweep state in DynamoDB (the real client; dynalite locally). One table keyed by sweep id
 * (`sweepId`, sort key `item`):
 * - `(sweepId, "#sweep")`: the sweep: definition, status, where the staged export lies, its
 *   transactionTime;
 * - `(sweepId, "part#<nnnn>")`: a checkpoint per item, written after each batch: the last
 *   patient id processed in the item's merged stream (ids ascending), and the tally so far;
 * - `("latest#<definition name>", "latest")`: the last successful sweep, whose transactionTime
 *   is the next incremental sweep's `_since`.
 */
import {
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type AttributeValue,
  type CreateTableCommandInput,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import type { SweepDefinition } from './definition.js';
import type { Tally } from './tally.js';

export const DEFAULT_SWEEP_TABLE = 'fhir-analytics-sweeps';

export function sweepTableDefinition(tableName = DEFAULT_SWEEP_TABLE): CreateTableCommandInput {
  return {
    TableName: tableName,
    AttributeDefinitions: [
      { AttributeName: 'sweepId', AttributeType: 'S' },
      { AttributeName: 'item', AttributeType: 'S' },
    ],
    KeySchema: [
      { AttributeName: 'sweepId', KeyType: 'HASH' },
      { AttributeName: 'item', KeyType: 'RANGE' },
    ],
    BillingMode: 'PAY_PER_REQUEST',
  };
}

export type SweepStatus = 'exporting' | 'searching' | 'staged' | 'done' | 'failed';

export interface SweepRecord {
  readonly sweepId: string;
  readonly definition: SweepDefinition;
  status: SweepStatus;
  readonly startedAt: string;
  /** `_since` used (absent: a full sweep). */
  since?: string;
  /** S3 key of the staged export's description (`StagedExport`). */
  stagedKey?: string;
  /**
   * The export job's status URL and the kick-off it belongs to, recorded right after the
   * kick-off: a retried Begin polls that job instead of starting another (it would run unpolled).
   */
  statusUrl?: string;
  exportAttempt?: number;
  transactionTime?: string;
  finishedAt?: string;
}

export interface ItemCheckpoint {
  readonly sweepId: string;
  readonly partition: number;
  /** The last patient id done, in the item's ascending merged order. */
  readonly lastPatient?: string;
  readonly done: boolean;
  readonly tally: Tally;
  readonly batches: number;
  readonly updatedAt: string;
}

export interface LatestSweep {
  readonly sweepId: string;
  readonly transactionTime: string;
  readonly finishedAt: string;
  /** Patients in the cohort at the last full sweep (for counting skipped patients). */
  readonly population: number;
}

export interface CheckpointStore {
  getSweep(sweepId: string): Promise<SweepRecord | undefined>;
  putSweep(record: SweepRecord): Promise<void>;
  getItem(sweepId: string, partition: number): Promise<ItemCheckpoint | undefined>;
  putItem(checkpoint: ItemCheckpoint): Promise<void>;
  listItems(sweepId: string): Promise<ItemCheckpoint[]>;
  getLatest(name: string): Promise<LatestSweep | undefined>;
  putLatest(name: string, latest: LatestSweep): Promise<void>;
}

const partKey = (partition: number): string => `part#${String(partition).padStart(4, '0')}`;

export function createCheckpointStore(
  client: DynamoDBClient,
  tableName = DEFAULT_SWEEP_TABLE,
): CheckpointStore {
  const get = async <T>(sweepId: string, item: string): Promise<T | undefined> => {
    const out = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: { sweepId: { S: sweepId }, item: { S: item } },
        ConsistentRead: true,
      }),
    );
    const body = out.Item?.body?.S;
    return body === undefined ? undefined : (JSON.parse(body) as T);
  };
  const put = async (sweepId: string, item: string, value: unknown): Promise<void> => {
    await client.send(
      new PutItemCommand({
        TableName: tableName,
        Item: { sweepId: { S: sweepId }, item: { S: item }, body: { S: JSON.stringify(value) } },
      }),
    );
  };
  return {
    getSweep: (sweepId) => get<SweepRecord>(sweepId, '#sweep'),
    putSweep: (record) => put(record.sweepId, '#sweep', record),
    getItem: (sweepId, partition) => get<ItemCheckpoint>(sweepId, partKey(partition)),
    putItem: (c) => put(c.sweepId, partKey(c.partition), c),
    async listItems(sweepId) {
      const items: ItemCheckpoint[] = [];
      let start: Record<string, AttributeValue> | undefined;
      do {
        const out = await client.send(
          new QueryCommand({
            TableName: tableName,
            KeyConditionExpression: 'sweepId = :s AND begins_with(#i, :p)',
            ExpressionAttributeNames: { '#i': 'item' },
            ExpressionAttributeValues: { ':s': { S: sweepId }, ':p': { S: 'part#' } },
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
        );
        for (const item of out.Items ?? [])
          if (item.body?.S) items.push(JSON.parse(item.body.S) as ItemCheckpoint);
        start = out.LastEvaluatedKey;
      } while (start);
      return items;
    },
    getLatest: (name) => get<LatestSweep>(`latest#${name}`, 'latest'),
    putLatest: (name, latest) => put(`latest#${name}`, 'latest', latest),
  };
}
