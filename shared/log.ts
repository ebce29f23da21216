/**
 * PHI-safe structured logger. Log lines carry references (`Patient/123`), counts, codes of
 * outcomes and timings, never names, identifiers, values or free text. The API makes the
 * safe thing easy: fields are typed as references, numbers, booleans or short enum-like
 * strings, and anything else is dropped.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A value allowed in a log line. Strings must look like references, codes or reasons. */
export type LogValue = string | number | boolean | null | undefined | readonly (string | number)[];
export type LogFields = Readonly<Record<string, LogValue>>;

/** Strings allowed through: FHIR references, ids, short machine codes and reasons. */
const SAFE_STRING = /^[A-Za-z0-9_.:/|#@=+-]{0,200}$/;
/** Shapes that are patient data even in the safe alphabet: dates, SSN-like and phone-like numbers. */
const PHI_SHAPE = /^(\d{4}-\d{2}-\d{2}(T.*)?|\d{3}-\d{2}-\d{4}|\+?\d[\d-]{7,})$/;
/** Field names that carry patient data whatever their value: redacted always. */
const PHI_KEYS = new Set([
  'name',
  'given',
  'family',
  'birthdate',
  'gender',
  'address',
  'telecom',
  'phone',
  'email',
  'mrn',
  'ssn',
  'identifier',
  'value',
  'valuequantity',
  'text',
  'note',
  'conclusion',
  'body',
  'resource',
]);

function sanitise(value: LogValue): LogValue {
  if (typeof value === 'string')
    return SAFE_STRING.test(value) && !PHI_SHAPE.test(value) ? value : '[redacted]';
  if (Array.isArray(value)) {
    return (value as readonly (string | number)[]).map((v) =>
      typeof v === 'string' ? (sanitise(v) as string) : v,
    );
  }
  return value;
}

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Lowest level written. Default `info`. */
  readonly level?: LogLevel;
  /** Where lines go. Default: one JSON line on stdout (stderr for warn and error). */
  readonly sink?: (line: string, level: LogLevel) => void;
  readonly base?: LogFields;
}

const defaultSink = (line: string, level: LogLevel): void => {
  (level === 'warn' || level === 'error' ? process.stderr : process.stdout).write(line + '\n');
};

/**
 * Messages are constant strings written by us (`'record failed'`), never interpolated
 * data; fields are sanitised so that a stray value with spaces or letters outside the
 * reference alphabet is redacted.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? 'info'];
  const sink = options.sink ?? defaultSink;
  const base = options.base ?? {};
  const write = (level: LogLevel, message: string, fields?: LogFields): void => {
    if (LEVELS[level] < min) return;
    const out: Record<string, LogValue> = { level, time: new Date().toISOString(), msg: message };
    for (const [k, v] of Object.entries({ ...base, ...fields })) {
      out[k] = PHI_KEYS.has(k.toLowerCase()) ? '[redacted]' : sanitise(v);
    }
    sink(JSON.stringify(out), level);
  };
  return {
    debug: (m, f) => {
      write('debug', m, f);
    },
    info: (m, f) => {
      write('info', m, f);
    },
    warn: (m, f) => {
      write('warn', m, f);
    },
    error: (m, f) => {
      write('error', m, f);
    },
    child: (fields) => createLogger({ ...options, base: { ...base, ...fields } }),
  };
}

/** A logger that writes nothing (tests and silent runs). */
export const silentLogger: Logger = createLogger({ sink: () => undefined });

/** The error's class name and, for our own errors, its code: never its message text. */
export function errorFields(err: unknown): LogFields {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { error: err.name, ...(typeof code === 'string' ? { code } : {}) };
  }
  return { error: typeof err };
}
