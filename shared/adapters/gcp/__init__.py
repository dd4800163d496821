"""Google Cloud adapters over plain REST (httpx): IAM allow policies (`gcp-iam`), Cloud SQL's two layers and the
Cloud Identity directory. No Google client library is imported; google-auth only when a token is first needed."""
