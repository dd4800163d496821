export interface Config {
  /** How the scaffolder action jitgate:access:request reaches jitgate. */
  jitgate?: {
    /**
     * `servicebus`: put requests on the Service Bus queue (managed identity, no secrets).
     * `http`: POST them to jitgate's intake, `<http.baseUrl>/api/access-requests`.
     */
    transport: 'servicebus' | 'http';

    serviceBus?: {
      /** Fully qualified namespace, such as `jitgate-prod.servicebus.windows.net`; never a connection string. */
      namespace: string;
      /** Queue name; defaults to `access-requests`. */
      queue?: string;
    };

    http?: {
      /** jitgate's base URL, such as `https://jitgate.example.com`. */
      baseUrl: string;
      /**
       * When jitgate sits behind App Service authentication: the scope to get a token for with
       * DefaultAzureCredential, such as `api://jitgate/.default`. Leave out for local jitgate.
       */
      tokenScope?: string;
      /**
       * Local jitgate only: the Entra object id (GUID) Backstage calls as, sent in
       * X-Jitgate-Dev-Principal. jitgate refuses this header outside local mode.
       */
      devPrincipal?: string;
    };

    /**
     * Base of the status links (`<statusBaseUrl>/api/access-requests/{id}`) the action outputs.
     * Required with `servicebus`; defaults to `http.baseUrl` with `http`.
     */
    statusBaseUrl?: string;
  };
}
