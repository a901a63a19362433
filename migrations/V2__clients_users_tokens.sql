-- OAuth2 clients, users, refresh-token families and revoked access tokens.

CREATE TABLE clients (
    tenant_id          text NOT NULL REFERENCES tenants (id),
    id                 text NOT NULL,
    name               text NOT NULL,
    -- HMAC-SHA-256 of the secret under the server's pepper; the secret
    -- itself is never stored.
    secret_hash        bytea NOT NULL,
    -- The secret replaced by the last rotation keeps working until then.
    previous_secret_hash bytea,
    previous_secret_expires_at timestamptz,
    grant_types        text[] NOT NULL,
    scopes             text[] NOT NULL,
    audience           text[] NOT NULL,
    allowed_origins    text[] NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    disabled_at        timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE users (
    tenant_id     text NOT NULL REFERENCES tenants (id),
    id            text NOT NULL,
    username      text NOT NULL,
    password_hash text NOT NULL,
    roles         text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_by_name ON users (tenant_id, username);

-- Every refresh token descends from one login; reuse of a spent token
-- revokes the whole family.
CREATE TABLE refresh_families (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    client_id   text NOT NULL,
    user_id     text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    FOREIGN KEY (tenant_id, client_id) REFERENCES clients (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX refresh_families_by_user ON refresh_families (tenant_id, user_id);

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token (256 random bits, so no salt or stretching).
    token_hash  bytea PRIMARY KEY,
    family_id   text NOT NULL REFERENCES refresh_families (id),
    scope       text NOT NULL,
    issued_at   timestamptz NOT NULL,
    idle_expires_at timestamptz NOT NULL,
    spent_at    timestamptz
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- Access tokens revoked before they expire, by jti.
CREATE TABLE revoked_access_tokens (
    tenant_id  text NOT NULL REFERENCES tenants (id),
    jti        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, jti)
);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
