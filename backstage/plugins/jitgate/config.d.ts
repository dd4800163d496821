export interface Config {
  jitgate?: {
    /** The Backstage pages of jitgate (@jitgate/backstage-plugin-jitgate). */
    pages?: {
      /**
       * jitgate's URL as the browser reaches it, e.g. https://func-jitgate.azurewebsites.net. Leave it out when a
       * proxy serves jitgate's /api on the app's own origin.
       * @visibility frontend
       */
      baseUrl?: string;
      /**
       * `entra` (default): each call carries the signed-in person's Entra token for jitgate's app, from Backstage's
       * Microsoft sign-in. `development`: a development identity, which only a local `jitgate serve` accepts.
       * @visibility frontend
       */
      auth?: 'entra' | 'development';
      /**
       * The delegated scope jitgate's app registration exposes, e.g. api://<jitgate app id>/access_as_user.
       * Required with `auth: entra`.
       * @visibility frontend
       */
      scope?: string;
      /**
       * The Entra object id the development identity claims (auth: development only).
       * @visibility frontend
       */
      devPrincipal?: string;
      /**
       * App roles the development identity claims, comma-separated, e.g. Jit.Auditor (auth: development only).
       * @visibility frontend
       */
      devRoles?: string;
      /**
       * How often lists and states are fetched again, in seconds (default 15; time left counts down every second).
       * @visibility frontend
       */
      pollSeconds?: number;
      /**
       * The scaffolder templates the request buttons open, prefilled.
       * @visibility frontend
       */
      templates?: {
        /** @visibility frontend */
        access?: string;
        /** @visibility frontend */
        database?: string;
      };
    };
  };
}
