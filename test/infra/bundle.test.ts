/**
 * The Lambda bundles, built as the CDK app builds them: ESM for Node 22 with the AWS SDK left to
 * the runtime, never onnxruntime (the local endpoint server's native runtime) nor ucum-lhc (the
 * generated unit table replaces it), and zod without its other locales, compiler and
 * `fromJSONSchema`, which no source may then use.
 */
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  bundleEntry,
  bundleFunction,
  externalImports,
  forbiddenModules,
  functionNames,
} from '../../bench/bundles.js';
import {
  BUNDLE_BUDGET_BYTES,
  bundleFunctionSync,
  copyManifests,
  FORBIDDEN_IN_BUNDLE,
  ZOD_LOCALES_KEPT,
} from '../../infra/constructs/bundling.js';
import { REPO_ROOT } from '../../infra/paths.js';
import { startLocalDynamo, TABLE_DEFINITIONS } from '../../local/dynamo.js';

const TABLE_NAMES = TABLE_DEFINITIONS.map((t) => t.TableName ?? '');

function probeDir(prefix: string): string {
  mkdirSync(join(REPO_ROOT, '.bench'), { recursive: true });
  return mkdtempSync(join(REPO_ROOT, '.bench', prefix));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

describe('function bundles', () => {
  it.each(functionNames())(
    '%s: no onnxruntime among the inputs or imports, AWS SDK external',
    async (name) => {
      const b = await bundleFunction(name);
      expect(forbiddenModules(b.metafile)).toEqual([]);
      const inputs = Object.keys(b.metafile.inputs);
      expect(inputs.some((i) => i.includes('node_modules/@aws-sdk/'))).toBe(false);
      expect(inputs).toContain(`functions/${name}/handler.ts`);
      const [output] = Object.values(b.metafile.outputs).filter((o) => o.entryPoint);
      // population-sweep has one entry point per Step Functions state; the others one handler.
      const entryPoints =
        name === 'population-sweep'
          ? [
              'startHandler',
              'pollHandler',
              'searchHandler',
              'stageFileHandler',
              'planHandler',
              'itemHandler',
              'finishHandler',
            ]
          : ['handler'];
      for (const e of entryPoints) expect(output?.exports).toContain(e);
      // zod keeps English only; ucum-lhc and the other forbidden packages never come in.
      const locales = inputs.filter((i) => /zod\/v4\/locales\/(?!index\.js$)/.test(i));
      expect(locales.map((i) => i.replace(/.*\//, ''))).toEqual(ZOD_LOCALES_KEPT.map((l) => `${l}.js`));
      expect(FORBIDDEN_IN_BUNDLE).toContain('@lhncbc/ucum-lhc');
      expect(b.bytes).toBeLessThanOrEqual(BUNDLE_BUDGET_BYTES);
    },
  );

  it.each(functionNames())(
    '%s: the SDK modules only some FHIR auth modes need are imported on first use, not at init',
    async (name) => {
      const b = await bundleFunction(name);
      // SMART's key (Secrets Manager) and SigV4's default credential chain: shared/fhir/auth-config.ts.
      for (const lazy of ['@aws-sdk/client-secrets-manager', '@aws-sdk/credential-provider-node']) {
        expect(externalImports(b.metafile, 'static')).not.toContain(lazy);
        expect(externalImports(b.metafile, 'dynamic')).toContain(lazy);
      }
      // Every runtime SDK package is loaded with require (runtimeSdkPlugin), none by ESM import.
      const esmImports = Object.values(b.metafile.outputs)
        .flatMap((o) => o.imports)
        .filter((i) => i.path.startsWith('@aws-sdk/') && i.kind !== 'require-call');
      expect(esmImports).toEqual([]);
    },
  );

  it('a bundle loads the runtime SDK with require: a static import sends a real request, an import() loads when called', async () => {
    const dir = probeDir('sdk-probe-');
    const entry = join(dir, 'entry.ts');
    writeFileSync(
      entry,
      [
        "import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';",
        'export async function listTables(endpoint: string): Promise<string[]> {',
        "  const credentials = { accessKeyId: 'local', secretAccessKey: 'local' };",
        "  const client = new DynamoDBClient({ endpoint, region: 'us-east-1', credentials });",
        '  try {',
        '    return (await client.send(new ListTablesCommand({}))).TableNames ?? [];',
        '  } finally {',
        '    client.destroy();',
        '  }',
        '}',
        'export async function secretsClient(): Promise<string> {',
        "  const { SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');",
        '  return SecretsManagerClient.name;',
        '}',
      ].join('\n'),
    );
    const dynamo = await startLocalDynamo({ port: 0 });
    try {
      const b = await bundleEntry(relative(join(REPO_ROOT, '.bench', 'bundles'), dir), entry);
      expect(externalImports(b.metafile, 'static')).toEqual(['@aws-sdk/client-dynamodb']);
      expect(externalImports(b.metafile, 'dynamic')).toEqual(['@aws-sdk/client-secrets-manager']);
      const loaded = () =>
        Object.keys(createRequire(b.file).cache).some((k) => k.includes('/client-secrets-manager/'));
      const m = (await import(pathToFileURL(b.file).href)) as {
        listTables: (endpoint: string) => Promise<string[]>;
        secretsClient: () => Promise<string>;
      };
      expect(await m.listTables(dynamo.endpoint)).toEqual(expect.arrayContaining(TABLE_NAMES));
      expect(loaded()).toBe(false);
      expect(await m.secretsClient()).toBe('SecretsManagerClient');
      expect(loaded()).toBe(true);
    } finally {
      await dynamo.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('outside the repository a bundle finds the runtime SDK through NODE_PATH, as Lambda sets it', async () => {
    const b = await bundleFunction('resource-event');
    const task = mkdtempSync(join(tmpdir(), 'lambda-task-'));
    try {
      copyFileSync(b.file, join(task, 'index.mjs'));
      const probe = [
        '--input-type=module',
        '-e',
        "const m = await import('./index.mjs'); process.stdout.write(typeof m.handler);",
      ];
      const run = (env: NodeJS.ProcessEnv) =>
        spawnSync(process.execPath, probe, { cwd: task, env, encoding: 'utf8' });
      const { NODE_PATH: _unset, ...env } = process.env;
      // No node_modules above the task folder: without NODE_PATH the SDK is not found.
      expect(run(env).stderr).toContain("Cannot find module '@aws-sdk/client-sagemaker-runtime'");
      const withPath = run({ ...env, NODE_PATH: join(REPO_ROOT, 'node_modules') });
      expect(withPath.stderr).toBe('');
      expect(withPath.stdout).toBe('function');
    } finally {
      rmSync(task, { recursive: true, force: true });
    }
  });

  it('bundled zod still parses, reports in English and writes JSON Schema; what was dropped says so', async () => {
    const dir = probeDir('zod-probe-');
    const entry = join(dir, 'entry.ts');
    writeFileSync(
      entry,
      [
        "import { z } from 'zod';",
        'const S = z.object({ id: z.string(), n: z.number().int().min(1) });',
        'export const bad = S.safeParse({ id: 1, n: 0 });',
        'export const good = S.parse({ id: "a", n: 2 });',
        'export const schema = z.toJSONSchema(S);',
        'export const locales = Object.keys(z.locales);',
        'export const compile = () => z.compile(S);',
        'export const fromJson = () => z.fromJSONSchema({ type: "string" });',
      ].join('\n'),
    );
    try {
      const b = await bundleEntry(relative(join(REPO_ROOT, '.bench', 'bundles'), dir), entry);
      const m = (await import(pathToFileURL(b.file).href)) as {
        bad: { success: boolean; error?: { issues: { path: unknown[]; message: string }[] } };
        good: unknown;
        schema: { properties?: Record<string, unknown> };
        locales: string[];
        compile: () => unknown;
        fromJson: () => unknown;
      };
      expect(m.bad.success).toBe(false);
      expect(m.bad.error?.issues.map((i) => [i.path.join('.'), i.message])).toEqual([
        ['id', 'Invalid input: expected string, received number'],
        ['n', 'Too small: expected number to be >=1'],
      ]);
      expect(m.good).toEqual({ id: 'a', n: 2 });
      expect(Object.keys(m.schema.properties ?? {})).toEqual(['id', 'n']);
      expect(m.locales).toEqual([...ZOD_LOCALES_KEPT]);
      expect(m.compile).toThrow(/zod compile is not in this Lambda bundle/);
      expect(m.fromJson).toThrow(/zod fromJSONSchema is not in this Lambda bundle/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no function source selects a zod locale or calls what the bundles drop', () => {
    const dropped =
      /\b(?:z\.compile|withParser|compileFn|fromJSONSchema)\b|\blocales\.|zod\/(?:v4\/)?locales|(?:from |import\()'@lhncbc\/ucum-lhc'/;
    const hits = ['functions', 'shared']
      .flatMap((d) => sourceFiles(join(REPO_ROOT, d)))
      .filter((f) => dropped.test(readFileSync(f, 'utf8').replace(/^\s*(?:\*|\/\/).*$/gm, '')))
      .map((f) => relative(REPO_ROOT, f));
    expect(hits).toEqual([]);
  });

  it('bundles for cdk synth through the same build, with the model manifests and cards when asked', () => {
    const dir = probeDir('synth-probe-');
    try {
      bundleFunctionSync(join(REPO_ROOT, 'functions', 'resource-event', 'handler.ts'), dir, {
        withManifests: true,
      });
      expect(existsSync(join(dir, 'index.mjs'))).toBe(true);
      expect(existsSync(join(dir, 'index.mjs.map'))).toBe(true);
      expect(readFileSync(join(dir, 'index.mjs'), 'utf8')).not.toMatch(/onnxruntime|@lhncbc/);
      const manifests = readdirSync(join(REPO_ROOT, 'models')).filter((id) =>
        existsSync(join(REPO_ROOT, 'models', id, 'manifest.json')),
      );
      expect(manifests.length).toBeGreaterThan(0);
      for (const id of manifests) {
        expect(existsSync(join(dir, 'models', id, 'manifest.json'))).toBe(true);
        // The functions turn card.md into the model-card DocumentReference at cold start.
        expect(readFileSync(join(dir, 'models', id, 'card.md'), 'utf8')).toBe(
          readFileSync(join(REPO_ROOT, 'models', id, 'card.md'), 'utf8'),
        );
      }
      expect(() => {
        bundleFunctionSync(join(dir, 'missing.ts'), dir);
      }).toThrow(/bundling .*missing\.ts failed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails the build when a model has a manifest but no card (the functions would not start)', () => {
    const root = probeDir('card-probe-');
    try {
      mkdirSync(join(root, 'models', 'with-card'), { recursive: true });
      writeFileSync(join(root, 'models', 'with-card', 'manifest.json'), '{}');
      writeFileSync(join(root, 'models', 'with-card', 'card.md'), '# card');
      expect(copyManifests(join(root, 'out'), root)).toEqual(['with-card']);
      expect(readFileSync(join(root, 'out', 'models', 'with-card', 'card.md'), 'utf8')).toBe('# card');
      mkdirSync(join(root, 'models', 'without-card'), { recursive: true });
      writeFileSync(join(root, 'models', 'without-card', 'manifest.json'), '{}');
      expect(() => copyManifests(join(root, 'out2'), root)).toThrow(/models\/without-card .*no card\.md/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('catches onnxruntime when an entry pulls it in', async () => {
    const dir = probeDir('onnx-probe-');
    const entry = join(dir, 'entry.ts');
    writeFileSync(entry, "import * as ort from 'onnxruntime-node';\nexport const handler = () => ort.env;\n");
    try {
      const b: Awaited<ReturnType<typeof bundleEntry>> | Error = await bundleEntry('onnx-probe', entry).catch(
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      );
      // Either the native addon cannot be bundled, or it is there and the scan names it.
      if (b instanceof Error) expect(b.message).toMatch(/onnxruntime|\.node/);
      else expect(forbiddenModules(b.metafile).some((m) => m.includes('onnxruntime'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
