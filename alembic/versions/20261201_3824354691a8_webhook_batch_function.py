"""webhook batch function (PostgreSQL)

A whole intake batch in one statement: `accept_webhook_batch(...)` applies the rules of
`app.services.webhook_intake.accept_events` inside the database, so a batch costs one round trip and one commit.
SQLite keeps applying them in Python. `tests/db/test_intake_store.py` holds the two to the same rows and outcomes.

Revision ID: 3824354691a8
Revises: f3ecc91f564c
Create Date: 2026-12-01 12:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3824354691a8"
down_revision: str | None = "f3ecc91f564c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One array element per delivery, in arrival order. p_kind is the event type when the event was understood, NULL
# for an unknown type; p_name is the company name a license change carries or the name an upsert sets. Returns one
# outcome per delivery: those of `accept_events`, 'duplicate', or 'recheck' (the tenant's secrets moved since the
# signature was checked against p_secrets_version: nothing was written for it) or 'unknown_tenant'.
ACCEPT_WEBHOOK_BATCH = r"""
CREATE OR REPLACE FUNCTION accept_webhook_batch(
    p_tenant varchar[], p_webhook varchar[], p_secrets_version int[], p_event_type varchar[], p_payload json[],
    p_received timestamptz[], p_kind varchar[], p_company varchar[], p_count int[], p_previous int[],
    p_sequence bigint[], p_effective timestamptz[], p_name varchar[], p_identifier varchar[], p_now timestamptz
) RETURNS varchar[] LANGUAGE plpgsql
-- Generic plans: left to choose, PostgreSQL re-plans most statements here on every call (it prices a plan for
-- this batch's arrays below one for arrays of unknown length), which more than doubled the cost of a small batch.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
  n int := coalesce(cardinality(p_tenant), 0);
  outcomes varchar[] := array_fill(NULL::varchar, ARRAY[n]);
  fresh boolean[] := array_fill(false, ARRAY[n]);
  t_id varchar[]; t_version int[]; t_billing boolean[];
  -- The batch's companies, locked, as parallel arrays keyed by tenant || '/' || portal id (tenant ids have no '/').
  c_key text[]; c_id varchar[]; c_tenant varchar[]; c_name varchar[]; c_identifier varchar[]; c_count int[];
  c_last bigint[]; c_deleted timestamptz[]; c_billing boolean[]; c_agreement int[]; c_changed boolean[]; c_due int[];
  c_born int[];  -- created by this batch: the delivery that created it (earlier ones did not see it yet)
  w_tenant varchar[]; w_company varchar[]; w_first int[]; born text[] := '{}';
  l_index int[] := '{}'; l_company varchar[] := '{}'; l_sequence bigint[] := '{}'; l_ignored varchar[] := '{}';
  i int; j int; k int; seq bigint; ignored varchar; rec record;
BEGIN
  -- The tenants: a delivery checked against secrets that have rotated since is handed back, untouched.
  SELECT array_agg(id), array_agg(secrets_version), array_agg(billing_enabled)
    INTO t_id, t_version, t_billing FROM tenant WHERE id = ANY(p_tenant);
  FOR i IN 1..n LOOP
    k := array_position(t_id, p_tenant[i]);
    IF k IS NULL THEN outcomes[i] := 'unknown_tenant';
    ELSIF t_version[k] <> p_secrets_version[i] THEN outcomes[i] := 'recheck';
    END IF;
  END LOOP;

  -- Inbox rows first, in key order: a (tenant, webhook-id) already there, or earlier in the batch, has no effect.
  FOR rec IN
    WITH candidate AS (
      SELECT DISTINCT ON (u.t, u.w) u.t, u.w, u.i::int AS i
      FROM unnest(p_tenant, p_webhook, outcomes) WITH ORDINALITY AS u(t, w, o, i)
      WHERE u.o IS NULL ORDER BY u.t, u.w, u.i
    ), inserted AS (
      INSERT INTO webhook_inbox (tenant_id, webhook_id, event_type, received_at, outcome, payload)
      SELECT c.t, c.w, p_event_type[c.i], p_received[c.i], 'applied', p_payload[c.i] FROM candidate c ORDER BY c.t, c.w
      ON CONFLICT (tenant_id, webhook_id) DO NOTHING
      RETURNING tenant_id, webhook_id
    )
    SELECT c.i FROM candidate c JOIN inserted x ON x.tenant_id = c.t AND x.webhook_id = c.w
  LOOP
    fresh[rec.i] := true;
  END LOOP;

  FOR i IN 1..n LOOP
    IF outcomes[i] IS NULL AND NOT fresh[i] THEN outcomes[i] := 'duplicate'; END IF;
  END LOOP;

  -- The companies the new deliveries name, each with the first delivery that may create it (a license change or an
  -- upsert; a deletion does not create). Those there are locked in one order (tenant, then id) by every writer.
  SELECT coalesce(array_agg(w.t), '{}'), coalesce(array_agg(w.e), '{}'), coalesce(array_agg(w.first), '{}')
    INTO w_tenant, w_company, w_first
  FROM (
    SELECT u.t, u.e, (min(u.i) FILTER (WHERE u.k <> 'company.deleted'))::int AS first
    FROM unnest(p_tenant, p_company, p_kind, fresh) WITH ORDINALITY AS u(t, e, k, f, i)
    WHERE u.f AND u.k IS NOT NULL GROUP BY u.t, u.e
  ) w;
  SELECT coalesce(array_agg(c.tenant_id || '/' || c.external_id), '{}'), coalesce(array_agg(c.id), '{}'),
    coalesce(array_agg(c.tenant_id), '{}'), coalesce(array_agg(c.name), '{}'),
    coalesce(array_agg(c.identifier), '{}'),
    coalesce(array_agg(c.license_count), '{}'), coalesce(array_agg(c.last_sequence), '{}'),
    coalesce(array_agg(c.deleted_at), '{}'), coalesce(array_agg(c.billing_enabled), '{}'),
    coalesce(array_agg(c.cw_agreement_id), '{}')
    INTO c_key, c_id, c_tenant, c_name, c_identifier, c_count, c_last, c_deleted, c_billing, c_agreement
  FROM (
    SELECT c.* FROM company c
    JOIN unnest(w_tenant, w_company) AS w(t, e) ON c.tenant_id = w.t AND c.external_id = w.e
    ORDER BY c.tenant_id, c.id FOR NO KEY UPDATE OF c
  ) c;
  c_born := array_fill(0, ARRAY[cardinality(c_key)]);
  -- Those not there yet and creatable are created (with an in-sync sync state), then locked in turn: created now,
  -- or by a concurrent transaction that committed first.
  IF EXISTS (
    SELECT FROM unnest(w_tenant, w_company, w_first) AS w(t, e, f)
    WHERE w.f IS NOT NULL AND NOT (w.t || '/' || w.e) = ANY(c_key)
  ) THEN
    WITH created AS (
      INSERT INTO company (id, tenant_id, external_id, name, license_count, billing_enabled, created_at, updated_at)
      SELECT gen_random_uuid()::text, w.t, w.e, coalesce(nullif(p_name[w.f], ''), w.e), 0, false, p_now, p_now
      FROM unnest(w_tenant, w_company, w_first) AS w(t, e, f)
      WHERE w.f IS NOT NULL AND NOT (w.t || '/' || w.e) = ANY(c_key)
      ORDER BY w.t, w.e
      ON CONFLICT (tenant_id, external_id) DO NOTHING
      RETURNING id, tenant_id, external_id
    ), states AS (
      INSERT INTO sync_state (company_id, tenant_id, status, generation, attempts)
      SELECT id, tenant_id, 'in_sync', 0, 0 FROM created
    )
    SELECT coalesce(array_agg(tenant_id || '/' || external_id), '{}') INTO born FROM created;
    SELECT c_key || coalesce(array_agg(c.k), '{}'), c_id || coalesce(array_agg(c.id), '{}'),
      c_tenant || coalesce(array_agg(c.tenant_id), '{}'), c_name || coalesce(array_agg(c.name), '{}'),
      c_identifier || coalesce(array_agg(c.identifier), '{}'), c_count || coalesce(array_agg(c.license_count), '{}'),
      c_last || coalesce(array_agg(c.last_sequence), '{}'), c_deleted || coalesce(array_agg(c.deleted_at), '{}'),
      c_billing || coalesce(array_agg(c.billing_enabled), '{}'),
      c_agreement || coalesce(array_agg(c.cw_agreement_id), '{}'),
      c_born || coalesce(array_agg(CASE WHEN c.k = ANY(born) THEN c.f ELSE 0 END), '{}')
      INTO c_key, c_id, c_tenant, c_name, c_identifier, c_count, c_last, c_deleted, c_billing, c_agreement, c_born
    FROM (
      SELECT c.*, c.tenant_id || '/' || c.external_id AS k, w.f
      FROM company c
      JOIN unnest(w_tenant, w_company, w_first) AS w(t, e, f) ON c.tenant_id = w.t AND c.external_id = w.e
      WHERE w.f IS NOT NULL AND NOT (w.t || '/' || w.e) = ANY(c_key)
      ORDER BY c.tenant_id, c.id FOR NO KEY UPDATE OF c
    ) c;
  END IF;
  c_changed := array_fill(false, ARRAY[cardinality(c_key)]);
  c_due := array_fill(0, ARRAY[cardinality(c_key)]);

  -- Each new delivery in arrival order, as `accept_events` does.
  FOR i IN 1..n LOOP
    CONTINUE WHEN NOT fresh[i];
    j := array_position(c_key, p_tenant[i] || '/' || p_company[i]);
    IF c_born[j] > i THEN j := NULL; END IF;  -- created by a later delivery: not there yet for this one
    IF p_kind[i] = 'license.count_changed' AND j IS NOT NULL THEN
      seq := coalesce(p_sequence[i], coalesce(c_last[j], 0) + 1);
      IF c_deleted[j] IS NOT NULL THEN ignored := 'company_deleted';
      ELSIF c_last[j] IS NOT NULL AND seq <= c_last[j] THEN ignored := 'stale_sequence';
      ELSE ignored := NULL;
      END IF;
      l_index := l_index || i; l_company := l_company || c_id[j]; l_sequence := l_sequence || seq;
      l_ignored := l_ignored || ignored;
      IF ignored IS NOT NULL THEN outcomes[i] := ignored; CONTINUE; END IF;
      c_count[j] := p_count[i]; c_last[j] := seq; c_changed[j] := true;
      IF coalesce(p_name[i], '') <> '' THEN c_name[j] := p_name[i]; END IF;
      k := array_position(t_id, p_tenant[i]);
      IF t_billing[k] AND c_billing[j] AND c_deleted[j] IS NULL AND c_agreement[j] IS NOT NULL THEN
        c_due[j] := c_due[j] + 1;
      END IF;
      outcomes[i] := 'applied';
    ELSIF p_kind[i] = 'company.upserted' AND j IS NOT NULL THEN
      c_name[j] := p_name[i]; c_identifier[j] := p_identifier[i]; c_changed[j] := true;
      IF c_deleted[j] IS NOT NULL THEN c_deleted[j] := NULL; outcomes[i] := 'restored';
      ELSE outcomes[i] := 'applied';
      END IF;
    ELSIF p_kind[i] = 'company.deleted' THEN
      IF j IS NULL OR c_deleted[j] IS NOT NULL THEN outcomes[i] := 'unknown_company';
      ELSE c_deleted[j] := p_now; c_changed[j] := true; outcomes[i] := 'applied';
      END IF;
    ELSE
      outcomes[i] := 'unknown_type';
    END IF;
  END LOOP;

  -- Everything decided, written at once; the sync-state part is the rule of `sync_schedule.mark_due`.
  WITH companies AS (
    UPDATE company AS c SET name = u.name, identifier = u.identifier, license_count = u.license_count,
      last_sequence = u.last_sequence, deleted_at = u.deleted_at, updated_at = p_now
    FROM unnest(c_id, c_name, c_identifier, c_count, c_last, c_deleted, c_changed)
      AS u(id, name, identifier, license_count, last_sequence, deleted_at, changed)
    WHERE u.changed AND c.id = u.id
  ), ledger AS (
    INSERT INTO license_change (tenant_id, company_id, webhook_id, sequence, license_count, previous_count,
      effective_at, received_at, ignored_reason)
    SELECT p_tenant[u.i], u.company_id, p_webhook[u.i], u.seq, p_count[u.i], p_previous[u.i],
      coalesce(p_effective[u.i], p_received[u.i]), p_received[u.i], u.ignored
    FROM unnest(l_index, l_company, l_sequence, l_ignored) WITH ORDINALITY AS u(i, company_id, seq, ignored, o)
    ORDER BY u.o
  ), due AS (
    INSERT INTO sync_state AS s (company_id, tenant_id, status, reason, due_at, generation, attempts)
    SELECT u.company_id, u.tenant_id, 'pending', 'license_change', p_now, u.changes, 0
    FROM unnest(c_id, c_tenant, c_due) AS u(company_id, tenant_id, changes) WHERE u.changes > 0 ORDER BY u.company_id
    ON CONFLICT (company_id) DO UPDATE SET
      generation = s.generation + excluded.generation,
      reason = excluded.reason,
      due_at = CASE WHEN s.due_at IS NULL OR s.due_at > excluded.due_at THEN excluded.due_at ELSE s.due_at END,
      status = CASE WHEN s.status IN ('in_sync', 'failed') THEN 'pending' ELSE s.status END,
      attempts = CASE WHEN s.status IN ('in_sync', 'failed') THEN 0 ELSE s.attempts END
  )
  UPDATE webhook_inbox AS x SET outcome = u.o
  FROM unnest(p_tenant, p_webhook, outcomes, fresh) AS u(t, w, o, f)
  WHERE u.f AND u.o <> 'applied' AND x.tenant_id = u.t AND x.webhook_id = u.w;
  RETURN outcomes;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ACCEPT_WEBHOOK_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION accept_webhook_batch(varchar[], varchar[], int[], varchar[], json[], timestamptz[], "
            "varchar[], varchar[], int[], int[], bigint[], timestamptz[], varchar[], varchar[], timestamptz)"
        )
