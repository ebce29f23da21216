/**
 * The server's CapabilityStatement (`GET <base>/metadata`): every concrete R4 resource type
 * with the interactions the router serves and the search parameters Medplum knows for it.
 */
import { globalSchema } from '@medplum/core';
import type {
  CapabilityStatement,
  CapabilityStatementRestResource,
  CapabilityStatementRestResourceSearchParam,
} from '@medplum/fhirtypes';
import { ensureFhirDefinitions } from './definitions.js';
import { INDEXED_CODES } from './search-index.js';
import { isKnownResourceType } from './validate.js';

const INTERACTIONS = [
  'read',
  'vread',
  'update',
  'patch',
  'delete',
  'history-instance',
  'create',
  'search-type',
] as const;

export function buildCapabilityStatement(baseUrl: string, startedAt: string): CapabilityStatement {
  ensureFhirDefinitions();
  const resource: CapabilityStatementRestResource[] = Object.keys(globalSchema.types)
    .filter((t) => isKnownResourceType(t))
    .sort()
    .map((type) => {
      const params = globalSchema.types[type]?.searchParams ?? {};
      const searchParam: CapabilityStatementRestResourceSearchParam[] = Object.entries(params).map(
        ([code, p]) => ({
          name: code,
          type: p.type,
          ...(p.url ? { definition: p.url } : {}),
          ...(INDEXED_CODES.includes(code) ? { documentation: 'Indexed.' } : {}),
        }),
      );
      return {
        type,
        interaction: INTERACTIONS.map((code) => ({ code })),
        versioning: 'versioned',
        readHistory: true,
        updateCreate: true,
        conditionalCreate: true,
        conditionalUpdate: true,
        conditionalDelete: 'single',
        searchParam,
      };
    });
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: startedAt,
    kind: 'instance',
    publisher: 'fhir-analytics',
    software: { name: 'fhir-analytics embedded FHIR server (@medplum/fhir-router)' },
    implementation: { description: 'Embedded FHIR R4 server for local development', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        resource,
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
        searchParam: [
          { name: '_count', type: 'number' },
          { name: '_offset', type: 'number' },
          { name: '_sort', type: 'string' },
        ],
      },
    ],
  };
}
