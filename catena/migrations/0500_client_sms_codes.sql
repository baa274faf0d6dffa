-- Subscriber sign-in codes (client API, API.md §9).  One pending code per phone
-- and portal: a resend replaces it.  Only an HMAC of the code is stored.  Rows
-- are written for unknown phones too (with a code that is never sent), so that
-- cooldown, attempts and expiry answer the same whether or not a phone is known.
CREATE TABLE client_sms_codes (
    portal_id bigint NOT NULL REFERENCES portals ON DELETE CASCADE,
    phone_country_code text NOT NULL,
    phone text NOT NULL,
    salt bytea NOT NULL,
    code_hash bytea NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (portal_id, phone_country_code, phone)
);
-- Expired rows are purged a day after expiry (admin_api.client.codes).
CREATE INDEX client_sms_codes_expires ON client_sms_codes (expires_at);
