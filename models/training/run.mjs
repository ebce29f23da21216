// `npm run train`: trains every model, exports ONNX, writes the model folders, then checks
// numeric parity in onnxruntime-node.
//
//   npm run train                 train into the repository (models/<id>/, local/demo/data/)
//   npm run train -- --check      retrain into a temporary directory with the same seeds and
//                                 fail if a held-out metric moved beyond TOLERANCES from the
//                                 committed manifest's `metrics`, or parity fails; the
//                                 committed files are not touched
//
// Training runs on Debian's Python (/usr/bin/python3 with python3-sklearn, python3-onnx,
// python3-torch), not the pyenv python3 on the PATH.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkAll, REPO_ROOT } from './parity.mjs';

const PYTHON = '/usr/bin/python3';
const APT_INSTALL =
  'apt-get install -y --no-install-recommends python3-sklearn python3-torch python3-onnx r-base-core r-cran-survival r-cran-mlbench';

/**
 * The training scripts, in order. Each takes `--out ROOT` and writes `ROOT/models/<id>/...`;
 * `models` lists the folders it writes (for --check), `extra` any other files it writes
 * (formatted with prettier after training), `needs` the Python modules it imports.
 * Add a model: add a line here.
 */
const SCRIPTS = [
  {
    script: 'gbm_diabetes.py',
    models: ['diabetes-gbm'],
    extra: ['local/demo/data/diabetes-heldout.json'],
    needs: ['sklearn', 'numpy', 'onnx'],
  },
  {
    script: 'svm_breast_cancer.py',
    models: ['breast-cancer-svm'],
    extra: ['local/demo/data/breast-cancer-heldout.json'],
    needs: ['sklearn', 'numpy', 'onnx'],
  },
  {
    // Also needs Rscript with r-cran-mlbench (the data is exported from it at train time).
    script: 'rf_pima.py',
    models: ['diabetes-onset-rf'],
    extra: ['local/demo/data/pima-heldout.json'],
    needs: ['sklearn', 'numpy', 'onnx'],
  },
  {
    // GRU and transformer on the same PBC samples and split; needs Rscript with
    // r-cran-survival (pbcseq is exported from it at train time). About 1.5 min.
    script: 'pbc_sequences.py',
    models: ['pbc-gru', 'pbc-attention'],
    extra: ['local/demo/data/pbc-heldout.json'],
    needs: ['torch', 'numpy', 'onnx'],
  },
  {
    // Synthetic CT patches (ct_synth.py, seeded); also writes the demo's 12 DICOM Part 10
    // files (local/demo/data/dicom/*.dcm, by hand, no pydicom). About 1 min.
    script: 'cnn_lung.py',
    models: ['lung-nodule-cnn'],
    extra: ['local/demo/data/dicom/index.json'],
    needs: ['torch', 'numpy', 'onnx'],
  },
];

/**
 * --check tolerances on held-out metrics (absolute). Training is seeded, so they should not
 * move at all; the slack covers library-version float noise. Metrics not listed are not
 * compared (confidence bounds, counts). Stated in each model card too.
 */
const TOLERANCES = { r2: 0.005, mae: 0.5, auc: 0.005, brier: 0.005, accuracy: 0.01 };

const log = (msg) => {
  console.log(`[train] ${msg}`);
};

function checkPython() {
  const modules = [...new Set(SCRIPTS.flatMap((s) => s.needs))];
  const probe = modules.map((m) => `import ${m}`).join('; ');
  const r = spawnSync(PYTHON, ['-c', `${probe}; print("ok")`], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    console.error(
      `[train] ${PYTHON} cannot import ${modules.join(', ')}` +
        (r.error ? ` (${r.error.message})` : `:\n${(r.stderr || '').trim()}`),
    );
    console.error(`[train] install Debian's packages (as root):\n  ${APT_INSTALL}`);
    process.exit(1);
  }
  log(`${PYTHON}: ${modules.join(', ')} importable`);
}

function runScript(script, outRoot) {
  const file = path.join(REPO_ROOT, 'models', 'training', script);
  log(`running ${script} → ${outRoot === REPO_ROOT ? 'repository' : outRoot}`);
  const t0 = Date.now();
  const r = spawnSync(PYTHON, [file, '--out', outRoot], {
    stdio: 'inherit',
    env: { ...process.env, PYTHONHASHSEED: '0', OMP_NUM_THREADS: '1' },
  });
  if (r.error || r.status !== 0) {
    console.error(`[train] ${script} failed (${r.error ? r.error.message : `exit ${r.status}`})`);
    process.exit(1);
  }
  log(`${script} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** Formats the written JSON with the repository's prettier config, so a retrain leaves
 * `prettier --check .` clean (golden.json, *.md and *.onnx are in .prettierignore). */
function formatOutputs() {
  const prettier = path.join(REPO_ROOT, 'node_modules', '.bin', 'prettier');
  if (!fs.existsSync(prettier)) {
    log('prettier not installed (npm ci); JSON outputs left as Python wrote them');
    return;
  }
  const files = SCRIPTS.flatMap((s) => [
    ...s.models.flatMap((id) => {
      const dir = path.join('models', id);
      return fs
        .readdirSync(path.join(REPO_ROOT, dir))
        .filter((f) => f.endsWith('.json') && f !== 'golden.json')
        .map((f) => path.join(dir, f));
    }),
    ...s.extra,
  ]);
  const r = spawnSync(prettier, ['--write', '--log-level', 'warn', ...files], {
    cwd: REPO_ROOT,
    stdio: 'inherit',
  });
  if (r.error || r.status !== 0) {
    console.error('[train] prettier failed on the outputs');
    process.exit(1);
  }
  log(`formatted ${files.length} JSON files with prettier`);
}

function compareMetrics(outRoot) {
  let ok = true;
  for (const { models } of SCRIPTS) {
    for (const id of models) {
      const committedFile = path.join(REPO_ROOT, 'models', id, 'manifest.json');
      if (!fs.existsSync(committedFile)) {
        log(`${id}: no committed manifest to compare with`);
        ok = false;
        continue;
      }
      const committed = JSON.parse(fs.readFileSync(committedFile, 'utf8')).metrics ?? {};
      const fresh =
        JSON.parse(fs.readFileSync(path.join(outRoot, 'models', id, 'manifest.json'), 'utf8')).metrics ?? {};
      for (const [name, tol] of Object.entries(TOLERANCES)) {
        if (!(name in committed) && !(name in fresh)) continue;
        const a = committed[name];
        const b = fresh[name];
        const pass = typeof a === 'number' && typeof b === 'number' && Math.abs(a - b) <= tol;
        ok &&= pass;
        log(`${id}: ${name} committed ${a} retrained ${b} (tolerance ±${tol}) ${pass ? 'ok' : 'MOVED'}`);
      }
    }
  }
  return ok;
}

async function main() {
  const check = process.argv.includes('--check');
  const t0 = Date.now();
  checkPython();
  const outRoot = check ? fs.mkdtempSync(path.join(os.tmpdir(), 'fhir-analytics-train-')) : REPO_ROOT;
  try {
    for (const { script } of SCRIPTS) runScript(script, outRoot);
    if (!check) formatOutputs();
    const parityOk = await checkAll(outRoot, console.log);
    const metricsOk = check ? compareMetrics(outRoot) : true;
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (!parityOk || !metricsOk) {
      log(
        `FAILED after ${secs} s (${!parityOk ? 'parity' : ''}${!parityOk && !metricsOk ? ', ' : ''}${!metricsOk ? 'metrics' : ''})`,
      );
      process.exitCode = 1;
    } else {
      log(`${check ? 'check' : 'training'} passed in ${secs} s`);
    }
  } finally {
    if (check) fs.rmSync(outRoot, { recursive: true, force: true });
  }
}

await main();
