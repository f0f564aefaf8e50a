-- LightTech schema, version 2: the administrators' audit trail, and a search order for users.

CREATE TABLE audit_log (
    seq             bigserial PRIMARY KEY,
    id              uuid NOT NULL UNIQUE,
    actor_id        uuid NOT NULL REFERENCES users (id),
    actor_username  text NOT NULL,
    action          text NOT NULL,
    target_id       uuid REFERENCES users (id),
    target_username text,
    detail          text,
    at              bigint NOT NULL
);
