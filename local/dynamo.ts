/**
 * Local DynamoDB: dynalite (in memory) in-process on loopback, driven by the real
 * `@aws-sdk/client-dynamodb`, with the tables the functions use. The table definitions are
 * exported for infra tests and for anyone creating them elsewhere.
 */
import { createRequire } from 'node:module';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  CreateTableCommand,
  DynamoDBClient,
  ResourceInUseException,
  waitUntilTableExists,
  type CreateTableCommandInput,
} from '@aws-sdk/client-dynamodb';

interface DynaliteOptions {
  /** Milliseconds tables stay CREATING (dynalite's default 500). */
  createTableMs?: number;
  deleteTableMs?: number;
  updateTableMs?: number;
}
type DynaliteFactory = (options?: DynaliteOptions) => Server;

/** Table names the functions use by default (`EVENT_STATE_TABLE` and the like override them). */
export const TABLE_NAMES = {
  eventState: 'fhir-analytics-event-state',
} as const;

/** The tables, as CreateTable inputs: string partition keys, on-demand billing. */
export const TABLE_DEFINITIONS: readonly CreateTableCommandInput[] = [
  {
    TableName: TABLE_NAMES.eventState,
    AttributeDefinitions: [{ AttributeName: 'subscription', AttributeType: 'S' }],
    KeySchema: [{ AttributeName: 'subscription', KeyType: 'HASH' }],
    BillingMode: 'PAY_PER_REQUEST',
  },
];

/** Creates every table (existing ones are left alone) and waits until each is ACTIVE. */
export async function createTables(
  client: DynamoDBClient,
  definitions: readonly CreateTableCommandInput[] = TABLE_DEFINITIONS,
): Promise<void> {
  for (const def of definitions) {
    try {
      await client.send(new CreateTableCommand(def));
    } catch (err) {
      if (!(err instanceof ResourceInUseException)) throw err;
    }
    await waitUntilTableExists({ client, maxWaitTime: 30, minDelay: 1 }, { TableName: def.TableName });
  }
}

export interface LocalDynamo {
  /** e.g. `http://127.0.0.1:4567`. */
  readonly endpoint: string;
  readonly client: DynamoDBClient;
  close(): Promise<void>;
}

export interface LocalDynamoOptions {
  /** Default 8000; 0 picks a free port. */
  port?: number;
  host?: string;
  /** Create {@link TABLE_DEFINITIONS} on start. Default true. */
  createTables?: boolean;
}

export async function startLocalDynamo(opts: LocalDynamoOptions = {}): Promise<LocalDynamo> {
  const dynalite = createRequire(import.meta.url)('dynalite') as DynaliteFactory;
  // Tables become ACTIVE at once: nothing to wait for locally.
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8000, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `http://${host}:${port}`;
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  if (opts.createTables ?? true) await createTables(client);
  return {
    endpoint,
    client,
    close: async () => {
      client.destroy();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
      });
    },
  };
}
