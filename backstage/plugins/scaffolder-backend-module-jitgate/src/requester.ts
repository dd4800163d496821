import { stringifyEntityRef, type UserEntity } from '@backstage/catalog-model';
import { isGuid, principalIdProblem, type Requester } from './accessRequest';
import { UnknownRequester } from './errors';

/**
 * The annotation holding a user's Entra object id. The Microsoft Graph org provider
 * (`@backstage/plugin-catalog-backend-module-msgraph`) sets it on every User it ingests.
 */
export const ENTRA_OBJECT_ID_ANNOTATION = 'graph.microsoft.com/user-id';

/** The scaffolder's view of who runs the task (`ctx.user`). */
export interface TaskUser {
  entity?: UserEntity;
  ref?: string;
}

/**
 * Who asks, from the catalog User that runs the template. jitgate grants roles to Entra
 * principals, so a user without an Entra object id cannot ask, and we say so plainly instead of
 * sending a request that would be rejected later.
 */
export function requesterOf(user: TaskUser | undefined): Requester {
  const entity = user?.entity;
  if (!entity) {
    const who = user?.ref ? `${user.ref} has no User entity in the catalog` : 'the task was started without a signed-in user';
    throw new UnknownRequester(
      `jitgate:access:request needs the catalog User of whoever runs the template, but ${who}. ` +
        'Sign in with an identity that resolves to a catalog User.',
    );
  }
  const ref = stringifyEntityRef(entity);
  const objectId = entity.metadata.annotations?.[ENTRA_OBJECT_ID_ANNOTATION]?.trim();
  if (!objectId) {
    throw new UnknownRequester(
      `${ref} has no '${ENTRA_OBJECT_ID_ANNOTATION}' annotation, so jitgate cannot tell which Entra user is asking. ` +
        "Ingest users with the Microsoft Graph catalog provider, which sets it, or add the user's Entra object id to the User entity.",
    );
  }
  if (!isGuid(objectId.toLowerCase())) {
    throw new UnknownRequester(
      `The '${ENTRA_OBJECT_ID_ANNOTATION}' annotation of ${ref} is '${objectId}', which is not an Entra object id (a GUID).`,
    );
  }
  const problem = principalIdProblem(objectId.toLowerCase());
  if (problem) {
    throw new UnknownRequester(`The '${ENTRA_OBJECT_ID_ANNOTATION}' annotation of ${ref} is not an Entra object id: it ${problem}.`);
  }
  const profile = entity.spec?.profile;
  const email = profile?.email?.trim();
  return {
    principalId: objectId.toLowerCase(),
    principalType: 'User',
    displayName: profile?.displayName?.trim() || entity.metadata.title?.trim() || entity.metadata.name,
    ...(email && { email }),
    backstageRef: ref,
  };
}
