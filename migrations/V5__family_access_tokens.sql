-- The access tokens issued from each refresh-token family, so that
-- revoking the family (RFC 7009 on a refresh token, reuse detection)
-- revokes them too (contract: "Revocation, made exact"). Rows go with
-- their family.

CREATE TABLE refresh_family_access_tokens (
    family_id  text NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    jti        text NOT NULL,
    -- The token's `exp`.
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (family_id, jti)
);

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
