-- RFC 8705: clients that authenticate with a TLS client certificate
-- (`tls_client_auth`) instead of a secret, and clients whose access tokens
-- are bound to their certificate (`cnf` with `x5t#S256`).

ALTER TABLE clients
    ALTER COLUMN secret_hash DROP NOT NULL,
    -- The RFC 8705 metadata parameter that names the client's certificate
    -- (`tls_client_auth_subject_dn`, `tls_client_auth_san_dns`, …) and its
    -- value in canonical form.
    ADD COLUMN tls_match_kind text,
    ADD COLUMN tls_match_value text,
    ADD COLUMN certificate_bound boolean NOT NULL DEFAULT false,
    -- Exactly one way to authenticate: a secret or a certificate.
    ADD CONSTRAINT clients_one_auth_method CHECK (
        (secret_hash IS NULL) = (tls_match_kind IS NOT NULL)
        AND (tls_match_kind IS NULL) = (tls_match_value IS NULL)
    );

-- When each master key version was first the current one on any replica;
-- its age is what operators alert on.
CREATE TABLE master_key_versions (
    version          integer PRIMARY KEY,
    first_current_at timestamptz NOT NULL DEFAULT now()
);
