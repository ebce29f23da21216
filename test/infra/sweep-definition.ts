/**
 * Reads a synthesized state machine as Step Functions would run it, far enough to check its
 * wiring: the definition with CloudFormation references replaced by placeholders, JSONPath
 * parameters resolved against a state's input and the context object (and the intrinsics
 * States.JsonToString and States.MathAdd), ResultSelector, ResultPath and a null OutputPath
 * applied, Pass, Wait
 * (no waiting) and Choice (StringEquals, NumericLessThan, Default) states, Catch of a task's
 * error (a `StateError` the visitor throws), Distributed Map children run on the items a
 * reader answers (a child's uncaught error fails the map with
 * States.ExceedToleratedFailureThreshold; the children's outputs go to `mapResults`, as the
 * map gathers them). Retries are not run.
 */
import type { Template } from 'aws-cdk-lib/assertions';

export type Json = unknown;
export interface State {
  readonly Type: string;
  readonly Next?: string;
  readonly End?: boolean;
  readonly Resource?: string;
  readonly Parameters?: Json;
  readonly ResultSelector?: Json;
  readonly ResultPath?: string | null;
  readonly OutputPath?: string | null;
  readonly Retry?: { ErrorEquals: string[]; IntervalSeconds?: number; BackoffRate?: number }[];
  readonly Catch?: { ErrorEquals: string[]; Next: string; ResultPath?: string | null }[];
  readonly ItemReader?: { Resource: string; ReaderConfig?: Json; Parameters: Json };
  readonly ItemSelector?: Json;
  readonly ItemProcessor?: { ProcessorConfig: { Mode: string }; StartAt: string; States: States };
  readonly MaxConcurrency?: number;
  readonly ToleratedFailurePercentage?: number;
  readonly ErrorPath?: string;
  readonly CausePath?: string;
  readonly Result?: Json;
  readonly SecondsPath?: string;
  readonly Choices?: readonly Rule[];
  readonly Default?: string;
}
export interface Rule {
  readonly Variable: string;
  readonly StringEquals?: string;
  readonly NumericLessThan?: number;
  readonly Next: string;
}

/** A task's error, as Step Functions names it (the Lambda error type) and its cause. */
export class StateError extends Error {
  constructor(
    readonly error: string,
    readonly detail = '',
  ) {
    super(`${error}: ${detail}`);
  }
}
export type States = Readonly<Record<string, State>>;
export interface Definition {
  readonly StartAt: string;
  readonly TimeoutSeconds?: number;
  readonly States: States;
}

/** `{ Ref }` → `ref:X`, `{ Fn::GetAtt: [X, A] }` → `getatt:X.A`, `{ Fn::ImportValue }` → `import:…`. */
function placeholder(token: Json): string {
  const t = token as Record<string, unknown>;
  if (typeof t.Ref === 'string') return t.Ref === 'AWS::Partition' ? 'aws' : `ref:${t.Ref}`;
  const att = t['Fn::GetAtt'];
  if (Array.isArray(att)) return `getatt:${att.join('.')}`;
  if ('Fn::ImportValue' in t) return `import:${JSON.stringify(t['Fn::ImportValue']).replace(/\W+/g, '')}`;
  throw new Error(`unexpected token in the definition: ${JSON.stringify(token)}`);
}

/** The one state machine of a template, parsed. */
export function stateMachineDefinition(template: Template): Definition {
  const machines = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
  if (machines.length !== 1) throw new Error(`expected one state machine, found ${machines.length}`);
  const body = (machines[0] as { Properties: { DefinitionString: Json } }).Properties.DefinitionString;
  if (typeof body === 'string') return JSON.parse(body) as Definition;
  const [sep, parts] = (body as { 'Fn::Join': [string, Json[]] })['Fn::Join'];
  return JSON.parse(parts.map((p) => (typeof p === 'string' ? p : placeholder(p))).join(sep)) as Definition;
}

/** A reference path (`$.a.b`, `$$.Execution.Name`); no filters or wildcards. */
export function readPath(path: string, input: Json, context: Json): Json {
  const [root, rest] = path.startsWith('$$') ? [context, path.slice(2)] : [input, path.slice(1)];
  if (!/^(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(rest)) throw new Error(`unsupported path ${path}`);
  let v = root;
  for (const seg of rest.split('.').slice(1)) {
    if (v === null || typeof v !== 'object' || !(seg in v)) throw new Error(`${path}: nothing at "${seg}"`);
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

function evaluate(expr: string, input: Json, context: Json): Json {
  const json = /^States\.JsonToString\((\$[^)]*)\)$/.exec(expr);
  if (json?.[1]) return JSON.stringify(readPath(json[1], input, context));
  const add = /^States\.MathAdd\((\$[^,)]*), *(-?\d+)\)$/.exec(expr);
  if (add?.[1] && add[2]) return Number(readPath(add[1], input, context)) + Number(add[2]);
  if (expr.startsWith('States.')) throw new Error(`unsupported intrinsic ${expr}`);
  return readPath(expr, input, context);
}

/** Parameters (or a selector) with every `key.$` replaced by the value its path selects. */
export function resolve(template: Json, input: Json, context: Json): Json {
  if (Array.isArray(template)) return template.map((t) => resolve(t, input, context));
  if (template === null || typeof template !== 'object') return template;
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(template)) {
    if (k.endsWith('.$')) {
      if (typeof v !== 'string') throw new Error(`${k}: not a path`);
      out[k.slice(0, -2)] = evaluate(v, input, context);
    } else out[k] = resolve(v, input, context);
  }
  return out;
}

/** `ResultPath`: null keeps the input, `$` replaces it, `$.a.b` sets that field of a copy. */
export function applyResultPath(input: Json, path: string | null | undefined, result: Json): Json {
  if (path === null) return input;
  if (path === undefined || path === '$') return result;
  const segs = path.replace(/^\$\./, '').split('.');
  const out = structuredClone(input) as Record<string, Json>;
  let at = out;
  for (const s of segs.slice(0, -1)) at = (at[s] ??= {}) as Record<string, Json>;
  at[segs[segs.length - 1] as string] = result;
  return out;
}

export interface Visitor {
  /** A Task's resolved parameters → its raw result. */
  task(name: string, state: State, parameters: Json): Json;
  /** A Distributed Map's resolved ItemReader parameters → the items. */
  items(name: string, state: State, reader: Json): Json[];
  /** A Distributed Map's gathered child outputs. */
  mapResults?(name: string, results: Json[]): void;
}

function choose(name: string, s: State, data: Json, context: Json): string {
  for (const rule of s.Choices ?? []) {
    const value = readPath(rule.Variable, data, context);
    if (rule.StringEquals !== undefined && value === rule.StringEquals) return rule.Next;
    if (rule.NumericLessThan !== undefined && typeof value === 'number' && value < rule.NumericLessThan)
      return rule.Next;
  }
  if (s.Default === undefined) throw new StateError('States.NoChoiceMatched', name);
  return s.Default;
}

/** Runs states from `startAt` (Next / End, Choice, Catch), at most 200 transitions. */
export function run(states: States, startAt: string, input: Json, context: Json, visit: Visitor): Json {
  let name: string | undefined = startAt;
  let data = input;
  for (let n = 0; name !== undefined && n < 200; n++) {
    const s: State | undefined = states[name];
    if (!s) throw new Error(`no state ${name}`);
    let next: string | undefined = s.End ? undefined : s.Next;
    try {
      if (s.Type === 'Task') {
        const raw = visit.task(name, s, resolve(s.Parameters, data, context));
        const selected = s.ResultSelector ? resolve(s.ResultSelector, raw, context) : raw;
        data = s.OutputPath === null ? {} : applyResultPath(data, s.ResultPath, selected);
      } else if (s.Type === 'Map') {
        if (!s.ItemReader || !s.ItemProcessor)
          throw new Error(`${name}: not a Distributed Map over a reader`);
        const processor = s.ItemProcessor;
        const results: Json[] = [];
        for (const [index, item] of visit
          .items(name, s, resolve(s.ItemReader.Parameters, data, context))
          .entries()) {
          const mapContext = { ...(context as object), Map: { Item: { Index: index, Value: item } } };
          const childInput = s.ItemSelector ? resolve(s.ItemSelector, data, mapContext) : item;
          try {
            results.push(run(processor.States, processor.StartAt, childInput, mapContext, visit));
          } catch (err) {
            if (!(err instanceof StateError)) throw err;
            throw new StateError('States.ExceedToleratedFailureThreshold', err.message);
          }
        }
        visit.mapResults?.(name, results);
        data = applyResultPath(data, s.ResultPath, results);
      } else if (s.Type === 'Pass') {
        const result = s.Parameters ? resolve(s.Parameters, data, context) : (s.Result ?? data);
        data = s.OutputPath === null ? {} : applyResultPath(data, s.ResultPath, result);
      } else if (s.Type === 'Wait') {
        const seconds = s.SecondsPath ? readPath(s.SecondsPath, data, context) : 0;
        if (!Number.isInteger(seconds) || (seconds as number) < 0)
          throw new Error(
            `${name}: SecondsPath gives ${JSON.stringify(seconds)}, not a whole number of seconds`,
          );
      } else if (s.Type === 'Choice') {
        next = choose(name, s, data, context);
      } else if (s.Type === 'Fail' || s.Type === 'Succeed') {
        return data;
      } else throw new Error(`${name}: state type ${s.Type} not simulated`);
    } catch (err) {
      if (!(err instanceof StateError)) throw err;
      const catcher = s.Catch?.find(
        (c) => c.ErrorEquals.includes(err.error) || c.ErrorEquals.includes('States.ALL'),
      );
      if (!catcher) throw err;
      data = applyResultPath(data, catcher.ResultPath, { Error: err.error, Cause: err.detail });
      next = catcher.Next;
    }
    name = next;
  }
  return data;
}

/** A value of the right shape for a CloudFormation reference in a sweep function's environment. */
export const SAMPLE: Record<string, string> = {
  FHIR_CREDENTIALS_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:FhirCredentials-AbCdEf',
  SWEEP_BUCKET: 'fhiranalyticsdata-exports-abc123',
  SWEEP_TABLE: 'FhirAnalyticsData-Checkpoints-XYZ',
};
