import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import { catalogServiceRef } from '@backstage/plugin-catalog-node';
import { scaffolderActionsExtensionPoint } from '@backstage/plugin-scaffolder-node';
import { createRequestAccessAction } from './requestAccessAction';
import { createSender, readJitgateSettings, statusUrlOf } from './settings';
import { createTargetsRouter } from './targets';

/**
 * The scaffolder module that adds `jitgate:access:request`, and the route that feeds the
 * request-access template's pickers from the component's `jitgate.io/*` annotations.
 */
export const scaffolderModuleJitgate = createBackendModule({
  pluginId: 'scaffolder',
  moduleId: 'jitgate',
  register(reg) {
    reg.registerInit({
      deps: {
        scaffolder: scaffolderActionsExtensionPoint,
        config: coreServices.rootConfig,
        lifecycle: coreServices.lifecycle,
        logger: coreServices.logger,
        httpRouter: coreServices.httpRouter,
        httpAuth: coreServices.httpAuth,
        catalog: catalogServiceRef,
      },
      async init({ scaffolder, config, lifecycle, logger, httpRouter, httpAuth, catalog }) {
        const settings = readJitgateSettings(config);
        const sender = createSender(settings);
        lifecycle.addShutdownHook(() => sender.close());
        scaffolder.addActions(
          createRequestAccessAction({ sender, statusUrlOf: requestId => statusUrlOf(settings, requestId), catalog }),
        );
        httpRouter.use(createTargetsRouter({ catalog, httpAuth }));
        logger.info(`jitgate:access:request sends access requests to ${sender.destination}`);
      },
    });
  },
});
