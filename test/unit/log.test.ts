import { describe, expect, it } from 'vitest';
import { createLogger, errorFields } from '../../shared/log.js';

describe('PHI-safe logger', () => {
  it('keeps references, counts and codes and redacts free text', () => {
    const lines: string[] = [];
    const logger = createLogger({ sink: (l) => lines.push(l) });
    logger.info('report written', {
      patient: 'Patient/123',
      report: 'DiagnosticReport/abc-1',
      inputs: 9,
      name: 'Jane Q. Public',
      note: 'glucose 250 mg/dL, feels unwell',
    });
    const entry = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    expect(entry).toMatchObject({
      msg: 'report written',
      patient: 'Patient/123',
      report: 'DiagnosticReport/abc-1',
      inputs: 9,
    });
    expect(entry.name).toBe('[redacted]');
    expect(entry.note).toBe('[redacted]');
  });

  it('redacts fields named like patient data and values shaped like dates or national ids', () => {
    const lines: string[] = [];
    const logger = createLogger({ sink: (l) => lines.push(l) });
    logger.info('probe', {
      name: 'Smith',
      mrn: 'MRN-0012345',
      birthDate: '1961-04-02',
      value: 182.5,
      other: '123-45-6789',
      when: '2026-11-29T10:00:00Z',
      report: 'DiagnosticReport/abc',
      count: 3,
    });
    expect(JSON.parse(lines[0] ?? '{}')).toMatchObject({
      name: '[redacted]',
      mrn: '[redacted]',
      birthDate: '[redacted]',
      value: '[redacted]',
      other: '[redacted]',
      when: '[redacted]',
      report: 'DiagnosticReport/abc',
      count: 3,
    });
  });

  it('respects the level and carries child fields', () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'warn', sink: (l) => lines.push(l) }).child({
      fn: 'resource-event',
    });
    logger.info('hidden');
    logger.warn('shown', { attempt: 2 });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '{}')).toMatchObject({ msg: 'shown', fn: 'resource-event', attempt: 2 });
  });

  it('logs an error by its class name and code, never its message', () => {
    const err = Object.assign(new TypeError('value 250 for Jane'), { code: 'E_BAD' });
    expect(errorFields(err)).toEqual({ error: 'TypeError', code: 'E_BAD' });
  });
});
