/**
 * Publishes the Triton model repository to the artifact bucket, in the layout the endpoints read:
 * - per-model (default): `s3://<bucket>/triton/<id>/<version>/<tritonModelName>/config.pbtxt` and
 *   `.../<tritonModelName>/1/model.onnx` (uncompressed, `S3Prefix`);
 * - `--multi-model`: `s3://<bucket>/triton-mme/<tritonModelName>.tar.gz`, each archive holding
 *   `<tritonModelName>/config.pbtxt` and `<tritonModelName>/1/model.onnx`.
 *
 * Usage: `npx tsx infra/publish-models.ts --bucket <ArtifactBucketName> [--multi-model] [--dry-run]`
 * (credentials and region from the usual AWS environment). Publish before `cdk deploy` of the
 * serving stack: an endpoint whose model data is missing fails to start.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, cpSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { readManifests } from './models.js';
import { REPO_ROOT } from './paths.js';
import { PREFIX } from './stacks/data-stack.js';

export interface Upload {
  readonly file: string;
  readonly key: string;
}

/** The objects to upload, per model, without touching S3. */
export function plan(multiModel: boolean, workDir: string): Upload[] {
  const uploads: Upload[] = [];
  for (const m of readManifests()) {
    const dir = path.join(REPO_ROOT, 'models', m.id);
    const config = path.join(dir, 'config.pbtxt');
    const onnx = path.join(dir, '1', 'model.onnx');
    if (!existsSync(config) || !existsSync(onnx)) {
      throw new Error(`models/${m.id}: config.pbtxt and 1/model.onnx are both required`);
    }
    const name = m.serving.tritonModelName;
    if (!readFileSync(config, 'utf8').includes(`name: "${name}"`)) {
      throw new Error(`models/${m.id}/config.pbtxt: name must be "${name}" (serving.tritonModelName)`);
    }
    if (multiModel) {
      const stage = path.join(workDir, name);
      mkdirSync(path.join(stage, '1'), { recursive: true });
      cpSync(config, path.join(stage, 'config.pbtxt'));
      cpSync(onnx, path.join(stage, '1', 'model.onnx'));
      const archive = path.join(workDir, `${name}.tar.gz`);
      execFileSync('tar', ['-czf', archive, '-C', workDir, name]);
      uploads.push({ file: archive, key: `${PREFIX.tritonMme}${name}.tar.gz` });
    } else {
      const base = `${PREFIX.triton}${m.id}/${m.version}/${name}/`;
      uploads.push({ file: config, key: `${base}config.pbtxt` }, { file: onnx, key: `${base}1/model.onnx` });
    }
  }
  return uploads;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      bucket: { type: 'string' },
      'multi-model': { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
    },
  });
  if (!values.bucket)
    throw new Error('--bucket <ArtifactBucketName> is required (a FhirAnalyticsData output)');
  const work = mkdtempSync(path.join(tmpdir(), 'fa-models-'));
  try {
    const uploads = plan(values['multi-model'], work);
    const s3 = new S3Client({});
    for (const u of uploads) {
      console.log(`${values['dry-run'] ? 'would put' : 'put'} s3://${values.bucket}/${u.key}`);
      if (!values['dry-run']) {
        // The bucket's default encryption (SSE-KMS with the data key) applies.
        await s3.send(
          new PutObjectCommand({ Bucket: values.bucket, Key: u.key, Body: readFileSync(u.file) }),
        );
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main();
}
