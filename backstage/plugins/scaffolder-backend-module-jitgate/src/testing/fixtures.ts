import { tmpdir } from 'node:os';
import type { UserEntity } from '@backstage/catalog-model';
import type { AccessAsked } from '../accessRequest';
import { ENTRA_OBJECT_ID_ANNOTATION } from '../requester';

/**
 * The action never touches the task workspace. Handing createMockActionContext an existing path
 * keeps it from making a mock directory per call, which it does not remove when CI is set.
 */
export const UNUSED_WORKSPACE = tmpdir();

export const JANE_OBJECT_ID = '2c5f39cb-3fb2-42e3-994f-1127d4ddb538';
export const PAYMENTS_RG = '/subscriptions/3d6a4adc-4ac3-43f4-a05a-2238e5eec649/resourceGroups/rg-payments-prod';

/** A catalog User as the Microsoft Graph provider ingests it. */
export function userEntity(
  name = 'jane',
  options: { annotations?: Record<string, string>; profile?: UserEntity['spec']['profile']; title?: string } = {},
): UserEntity {
  return {
    apiVersion: 'backstage.io/v1alpha1',
    kind: 'User',
    metadata: {
      name,
      namespace: 'default',
      ...(options.title && { title: options.title }),
      annotations: options.annotations ?? { [ENTRA_OBJECT_ID_ANNOTATION]: JANE_OBJECT_ID.toUpperCase() },
    },
    spec: { profile: options.profile ?? { displayName: 'Jane Doe', email: 'jane@example.com' }, memberOf: [] },
  };
}

/** What the request-access template passes to the action. */
export function askedFor(overrides: Partial<AccessAsked> = {}): AccessAsked {
  return {
    target: { provider: 'azure-rbac', scope: PAYMENTS_RG, role: 'Contributor' },
    duration: 'PT2H',
    justification: 'Rotate the payments DB firewall rule for INC-4711',
    ticket: 'INC-4711',
    entityRef: 'component:default/payments-api',
    ...overrides,
  };
}
