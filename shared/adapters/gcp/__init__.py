"""Google Cloud adapters: Pub/Sub (the bus), Cloud Tasks (its scheduled messages), and the identity that lets
the functions reach the Cosmos DB store without a secret. Google SDKs are imported on first use, never at import."""
