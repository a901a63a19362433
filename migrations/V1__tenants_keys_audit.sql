-- Tenants, their signing keys, the audit trail and the fencing counters
-- that guard lock-protected writes.

CREATE TABLE tenants (
    id                text PRIMARY KEY
                      CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    display_name      text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    token_ttl_seconds integer NOT NULL DEFAULT 900
                      CHECK (token_ttl_seconds BETWEEN 5 AND 86400),
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- A disabled tenant keeps its row for ever: ids are never reused.
    disabled_at       timestamptz
);

CREATE TABLE signing_keys (
    tenant_id          text NOT NULL REFERENCES tenants (id),
    kid                text NOT NULL,
    status             text NOT NULL
                       CHECK (status IN ('next', 'active', 'retired', 'revoked')),
    algorithm          text NOT NULL DEFAULT 'RS256',
    -- Public half as RFC 7517 members (base64url, no padding).
    modulus_b64        text NOT NULL,
    exponent_b64       text NOT NULL,
    -- Private half: PKCS#8 DER sealed with AES-256-GCM; the tenant id and
    -- kid are the associated data, so a row copied elsewhere cannot open.
    wrapped_private_key bytea NOT NULL,
    wrap_nonce         bytea NOT NULL CHECK (length(wrap_nonce) = 12),
    master_key_version integer NOT NULL CHECK (master_key_version > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- When a `next` key becomes due to sign (staged rotation).
    activate_after     timestamptz,
    activated_at       timestamptz,
    retired_at         timestamptz,
    -- A retired key is published until then (token lifetime + skew).
    publish_until      timestamptz,
    revoked_at         timestamptz,
    PRIMARY KEY (tenant_id, kid)
);

-- The database itself keeps a tenant from ever having two active (or two
-- next) keys, whatever the application does.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (tenant_id) WHERE status = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (tenant_id) WHERE status = 'next';
CREATE INDEX signing_keys_by_master_version ON signing_keys (master_key_version);

CREATE TABLE audit_events (
    id         bigserial PRIMARY KEY,
    tenant_id  text REFERENCES tenants (id),
    type       text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, id DESC);

-- Highest fencing token that has committed under each lock. A writer whose
-- Redis lock expired holds a smaller token and is refused in its own
-- transaction.
CREATE TABLE lock_fences (
    name  text PRIMARY KEY,
    fence bigint NOT NULL
);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
