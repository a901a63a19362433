-- Secure mode (RFC 8693 token exchange by public clients), lost-refresh
-- grace and subject revocation.

-- Tenant settings: how long a minted auth token lives, and how long a
-- spent refresh token may be presented again when its answer was lost.
ALTER TABLE tenants
    ADD COLUMN auth_token_ttl_seconds integer NOT NULL DEFAULT 60
        CHECK (auth_token_ttl_seconds BETWEEN 10 AND 600),
    ADD COLUMN refresh_reuse_grace_seconds integer NOT NULL DEFAULT 0
        CHECK (refresh_reuse_grace_seconds BETWEEN 0 AND 60);

-- Public clients (`token_endpoint_auth_method` `none`) authenticate with
-- neither a secret nor a certificate.
ALTER TABLE clients
    ADD COLUMN public boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT clients_one_auth_method,
    ADD CONSTRAINT clients_one_auth_method CHECK (
        (tls_match_kind IS NULL) = (tls_match_value IS NULL)
        AND CASE WHEN public THEN secret_hash IS NULL AND tls_match_kind IS NULL
                 ELSE (secret_hash IS NULL) = (tls_match_kind IS NOT NULL) END
    );

-- Single-use auth tokens minted by a tenant's backend for one subject and
-- one public client. Only SHA-256 of the token (256 random bits) is kept.
CREATE TABLE auth_tokens (
    token_hash       bytea PRIMARY KEY,
    tenant_id        text NOT NULL,
    client_id        text NOT NULL,
    public_client_id text NOT NULL,
    subject          text NOT NULL,
    scope            text NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    redeemed_at      timestamptz,
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, id),
    FOREIGN KEY (tenant_id, public_client_id) REFERENCES clients (tenant_id, id)
);
CREATE INDEX auth_tokens_by_expiry ON auth_tokens (expires_at);

-- A family's subject is a user (`user_id`), or in secure mode the
-- tenant's own id for one of its users, which Keysilo does not know
-- (`subject`); then `actor` is the client that minted the auth token (the
-- `act` claim). Rows written by earlier releases keep meaning what they
-- meant: `user_id` set, the other two null.
ALTER TABLE refresh_families
    ADD COLUMN subject text,
    ADD COLUMN actor text,
    ALTER COLUMN user_id DROP NOT NULL,
    ADD CONSTRAINT refresh_families_user_or_subject CHECK (
        (user_id IS NULL) = (actor IS NOT NULL)
        AND (user_id IS NULL) = (subject IS NOT NULL)
    );
CREATE INDEX refresh_families_by_subject ON refresh_families (tenant_id, subject)
    WHERE subject IS NOT NULL;

-- Rotation remembers each token's successor, so that a token presented
-- again within the grace can replace it (the successor is then
-- `superseded`: refused, without revoking the family).
ALTER TABLE refresh_tokens
    ADD COLUMN successor_hash bytea,
    ADD COLUMN superseded_at timestamptz;

-- `POST /admin/v1/tenants/{T}/subjects/{subject}/revoke`: every access
-- token of the subject issued at or before `issued_before` is refused.
-- Kept until no such token can still be accepted.
CREATE TABLE revoked_subjects (
    tenant_id     text NOT NULL REFERENCES tenants (id),
    subject       text NOT NULL,
    issued_before timestamptz NOT NULL,
    keep_until    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subject)
);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
