"""Adapters: one folder per platform, one module per service, each implementing a port from `shared.ports`.

- `embedded/`: the laptop default (SQLite bus and store, the simulated RBAC plane, the outbox notifier,
  approver groups from the policy file);
- `azure/`: Service Bus, Cosmos DB, ARM (RBAC and PIM), Microsoft Graph, Azure Monitor, the Blob archive;
- `teams/`: Microsoft Teams, which every platform notifies through.

Modules at this level are shared plumbing: HTTP retry rules, SDK error translation, stored formats.
"""
