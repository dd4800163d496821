"""Google Cloud adapters: Pub/Sub (the bus), Cloud Tasks (its scheduled messages), the identity that lets the
functions reach the Cosmos DB store without a secret, and, over plain REST (httpx), IAM allow policies (`gcp-iam`),
Cloud SQL's two layers and the Cloud Identity directory. Google SDKs are imported on first use, never at import;
google-auth only when a token is first needed."""
