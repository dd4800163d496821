/**
 * jitgate for the Backstage scaffolder: the action `jitgate:access:request`.
 *
 * @packageDocumentation
 */
export { scaffolderModuleJitgate as default } from './module';
export { createRequestAccessAction, REQUEST_ACCESS_ACTION_ID, type RequestAccessActionOptions } from './requestAccessAction';
export type { AccessRequestV1, AccessAsked, Provider, Requester, Target, RequestContext } from './accessRequest';
export type { AccessRequestSender } from './sender';
export { HttpSender, type HttpSenderOptions } from './httpSender';
export { ServiceBusSender, type ServiceBusSenderOptions } from './serviceBusSender';
export { InvalidAccessRequest, UnknownRequester, RequestIdConflict, DeliveryFailed, type FieldError } from './errors';
export { ENTRA_OBJECT_ID_ANNOTATION } from './requester';
export { PROVIDER_ANNOTATION, SCOPES_ANNOTATION, ROLES_ANNOTATION } from './targets';
