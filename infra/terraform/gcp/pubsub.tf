# The three queues (docs/architecture.md §3). Pub/Sub has no scheduled delivery and no duplicate detection: jitgate's
# handlers are idempotent, and revocations at expiresAt go through Cloud Tasks (tasks.tf).
resource "google_pubsub_topic" "queue" {
  for_each = local.queues
  # checkov:skip=CKV_GCP_83: Google-managed encryption; a customer-managed key adds a Cloud KMS key lifecycle, and messages hold request ids and commands, no secrets.
  name                       = each.key
  message_retention_duration = "604800s"
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.queues
  # checkov:skip=CKV_GCP_83: as the queue topics: Google-managed encryption, no secrets in the messages.
  name                       = "${each.key}-dead-letter"
  message_retention_duration = "604800s"
}

resource "google_pubsub_subscription" "queue" {
  for_each = local.queues
  name     = "${each.key}-push"
  topic    = google_pubsub_topic.queue[each.key].id

  ack_deadline_seconds       = each.value.ack_deadline
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  push_config {
    push_endpoint = google_cloud_run_v2_service.jitgate[each.value.target].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.jitgate[each.value.target].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  # NB. As Service Bus's max delivery count: a message that failed 10 times is parked for a person (jitgate dlq).
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = 10
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead letters are kept on a pull subscription until someone replays or drops them.
resource "google_pubsub_subscription" "dead_letter" {
  for_each                   = local.queues
  name                       = "${each.key}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

# The service agent moves dead letters: it publishes to the dead-letter topic and acknowledges on the source.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = local.queues
  topic    = google_pubsub_topic.dead_letter[each.key].name
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_source" {
  for_each     = local.queues
  subscription = google_pubsub_subscription.queue[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# jitgate sends on its own queues (intake, grant commands, early revokes) and reads its dead letters.
# A scheduled command (a revoke at expiresAt, a request's expiry) is a Cloud Task that publishes it to its topic.
resource "google_pubsub_topic_iam_member" "tasks_publish_scheduled" {
  for_each = toset(["access-lifecycle", "access-revocations"])
  topic    = google_pubsub_topic.queue[each.key].name
  role     = "roles/pubsub.publisher"
  member   = google_service_account.invoker.member
}

resource "google_pubsub_topic_iam_member" "runtime_publishes" {
  for_each = local.queues
  topic    = google_pubsub_topic.queue[each.key].name
  role     = "roles/pubsub.publisher"
  member   = google_service_account.runtime.member
}

resource "google_pubsub_subscription_iam_member" "runtime_reads_dead_letters" {
  for_each     = local.queues
  subscription = google_pubsub_subscription.dead_letter[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.runtime.member
}
