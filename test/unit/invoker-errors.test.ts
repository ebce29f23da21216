/**
 * The SageMaker invoker's failures and batches against a mocked SageMakerRuntimeClient: how
 * every SageMaker error class maps to a typed error (with no retry layer of our own: one `send`
 * per batch), timeouts and aborts, and batching over maxBatchSize in row order.
 */
import {
  InternalDependencyException,
  InternalFailure,
  InvokeEndpointCommand,
  ModelError,
  ModelNotReadyException,
  SageMakerRuntimeServiceException,
  ServiceUnavailable,
  ValidationError,
  type InvokeEndpointCommandInput,
  type SageMakerRuntimeClient,
} from '@aws-sdk/client-sagemaker-runtime';
import { afterEach, describe, expect, it } from 'vitest';
import {
  InferenceError,
  InferenceInternalDependencyError,
  InferenceInternalFailureError,
  InferenceModelError,
  InferenceModelNotReadyError,
  InferenceNetworkError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceTimeoutError,
  InferenceValidationError,
  toInferenceError,
} from '../../shared/inference/errors.js';
import { createInvoker } from '../../shared/inference/invoker.js';
import { invoker, row, sent, sm, sumEndpoint, tiny } from './invoker-fixtures.js';

afterEach(() => {
  sm.reset();
});

describe('errors', () => {
  const meta = (status: number) => ({ $metadata: { httpStatusCode: status, requestId: 'req-1' } });
  const throttling = new SageMakerRuntimeServiceException({
    name: 'ThrottlingException',
    $fault: 'client',
    message: 'Rate exceeded',
    ...meta(400),
  });
  const cases: [string, Error, new (...args: never[]) => InferenceError, boolean][] = [
    [
      'ValidationError',
      new ValidationError({ message: 'Endpoint x not found.', ...meta(400) }),
      InferenceValidationError,
      false,
    ],
    [
      'ModelError',
      new ModelError({
        message: 'Received client error (400)',
        OriginalStatusCode: 400,
        OriginalMessage: '{"error":"bad shape"}',
        LogStreamArn: 'arn:aws:logs:us-east-1:1:log-group:/aws/sagemaker/Endpoints/x',
        ...meta(424),
      }),
      InferenceModelError,
      false,
    ],
    [
      'ModelNotReadyException',
      new ModelNotReadyException({ message: 'loading', ...meta(429) }),
      InferenceModelNotReadyError,
      true,
    ],
    ['ThrottlingException', throttling, InferenceThrottlingError, true],
    [
      'InternalFailure',
      new InternalFailure({ message: 'oops', ...meta(500) }),
      InferenceInternalFailureError,
      true,
    ],
    [
      'ServiceUnavailable',
      new ServiceUnavailable({ message: 'busy', ...meta(503) }),
      InferenceServiceUnavailableError,
      true,
    ],
    [
      'InternalDependencyException',
      new InternalDependencyException({ message: 'kms', ...meta(530) }),
      InferenceInternalDependencyError,
      false,
    ],
  ];

  it.each(cases)(
    '%s → its typed error, with retryable as the SDK treats it, sent once',
    async (code, sdkError, cls, retryable) => {
      sm.on(InvokeEndpointCommand).rejects(sdkError);
      const err = await invoker()
        .predict(tiny, [row(1, 2, 3, 4)])
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect(err).toBeInstanceOf(InferenceError);
      const e = err as InferenceError;
      expect(e.code).toBe(code);
      expect(e.retryable).toBe(retryable);
      expect(e.cause).toBe(sdkError);
      expect(e.httpStatusCode).toBe(
        sdkError instanceof SageMakerRuntimeServiceException ? sdkError.$metadata.httpStatusCode : undefined,
      );
      expect(e.requestId).toBe('req-1');
      // No retry layer of ours on top of the SDK's: one send.
      expect(sm.commandCalls(InvokeEndpointCommand)).toHaveLength(1);
    },
  );

  it('keeps ModelError’s original status and message', async () => {
    sm.on(InvokeEndpointCommand).rejects(cases[1]?.[1]);
    const err = (await invoker()
      .predict(tiny, [row(1, 2, 3, 4)])
      .catch((e: unknown) => e)) as InferenceModelError;
    expect(err.originalStatusCode).toBe(400);
    expect(err.originalMessage).toBe('{"error":"bad shape"}');
    expect(err.logStreamArn).toMatch(/^arn:aws:logs:/);
  });

  it('maps by HTTP status when the SDK could not name the error, and network and abort errors', () => {
    const unknown = (status: number) =>
      Object.assign(new Error('UnknownError'), { name: 'Unknown', $metadata: { httpStatusCode: status } });
    expect(toInferenceError(unknown(424))).toBeInstanceOf(InferenceModelError);
    expect(toInferenceError(unknown(429))).toBeInstanceOf(InferenceModelNotReadyError);
    expect(toInferenceError(unknown(502))).toBeInstanceOf(InferenceServiceUnavailableError);
    expect(toInferenceError(unknown(530))).toBeInstanceOf(InferenceInternalDependencyError);
    expect(toInferenceError(unknown(400))).toBeInstanceOf(InferenceValidationError);
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(toInferenceError(refused)).toBeInstanceOf(InferenceNetworkError);
    expect(toInferenceError(refused).retryable).toBe(true);
    const abort = Object.assign(new Error('Request aborted'), { name: 'AbortError' });
    expect(toInferenceError(abort)).toBeInstanceOf(InferenceTimeoutError);
    const already = new InferenceThrottlingError('x');
    expect(toInferenceError(already)).toBe(already);
    expect(toInferenceError('boom').code).toBe('Unknown');
  });

  it('a call that runs past timeoutMs is aborted through the signal and becomes a timeout error', async () => {
    let signal: AbortSignal | undefined;
    const hanging = {
      send: (_cmd: unknown, opts: { abortSignal: AbortSignal }) => {
        signal = opts.abortSignal;
        return new Promise((_resolve, reject) => {
          opts.abortSignal.addEventListener('abort', () => {
            reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          });
        });
      },
    } as unknown as SageMakerRuntimeClient;
    const err = await createInvoker({ client: hanging, endpointName: (m) => m.id, timeoutMs: 20 })
      .predict(tiny, [row(1, 2, 3, 4)])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InferenceTimeoutError);
    expect((err as InferenceTimeoutError).retryable).toBe(true);
    expect((err as InferenceTimeoutError).timeoutMs).toBe(20);
    expect(signal?.aborted).toBe(true);
  });
  it('a call the caller aborts is not a timeout: code Aborted, not retryable', async () => {
    const hanging = {
      send: (_cmd: unknown, opts: { abortSignal: AbortSignal }) =>
        new Promise((_resolve, reject) => {
          opts.abortSignal.addEventListener('abort', () => {
            reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          });
        }),
    } as unknown as SageMakerRuntimeClient;
    const controller = new AbortController();
    const pending = createInvoker({ client: hanging, endpointName: (m) => m.id })
      .predict(tiny, [row(1, 2, 3, 4)], { signal: controller.signal })
      .catch((e: unknown) => e);
    controller.abort();
    const err = await pending;
    expect(err).toBeInstanceOf(InferenceError);
    expect(err).not.toBeInstanceOf(InferenceTimeoutError);
    expect((err as InferenceError).code).toBe('Aborted');
    expect((err as InferenceError).retryable).toBe(false);
  });
});

describe('batching', () => {
  it('splits over maxBatchSize (8) and returns predictions in row order, batches answering out of order', async () => {
    let call = 0;
    sm.on(InvokeEndpointCommand).callsFake(async (input: InvokeEndpointCommandInput) => {
      // Earlier batches answer later, so order must come from the batch index, not arrival.
      const delay = 30 - 10 * call++;
      await new Promise((r) => setTimeout(r, Math.max(0, delay)));
      return sumEndpoint(input);
    });
    const rows = Array.from({ length: 20 }, (_, i) => row(i, 0, 0, 0));
    const predictions = await invoker().predict(tiny, rows);
    expect(predictions.map((p) => p.score)).toEqual(rows.map((_, i) => i));
    const calls = sm.commandCalls(InvokeEndpointCommand);
    expect(calls).toHaveLength(3);
    const shapes = calls.map((_, i) => sent(i).tensors[0]?.shape);
    expect(shapes).toEqual([
      [8, 4],
      [8, 4],
      [4, 4],
    ]);
  });

  it('a failing batch fails the whole predict with the typed error', async () => {
    sm.on(InvokeEndpointCommand)
      .callsFakeOnce(sumEndpoint)
      .rejectsOnce(new ServiceUnavailable({ message: 'busy', $metadata: { httpStatusCode: 503 } }))
      .callsFake(sumEndpoint);
    const rows = Array.from({ length: 20 }, (_, i) => row(i, 0, 0, 0));
    await expect(invoker({ concurrency: 1 }).predict(tiny, rows)).rejects.toBeInstanceOf(
      InferenceServiceUnavailableError,
    );
    // With one batch at a time, the batch after the failure is not sent.
    expect(sm.commandCalls(InvokeEndpointCommand)).toHaveLength(2);
  });
});
