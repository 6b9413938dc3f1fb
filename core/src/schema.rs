//! Diesel table definitions of the control database (kept in step with `migrations/`).

diesel::table! {
    principals (id) {
        id -> Uuid,
        kind -> Text,
        email -> Nullable<Text>,
        display_name -> Text,
        password_hash -> Nullable<Text>,
        platform_role -> Nullable<Text>,
        invitation_token_hash -> Nullable<Bytea>,
        invitation_expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        principal_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    tenants (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        tier -> Text,
        region -> Text,
        state -> Text,
        cost_tags -> Jsonb,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    memberships (principal_id, tenant_id) {
        principal_id -> Uuid,
        tenant_id -> Uuid,
        role -> Text,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        principal_id -> Uuid,
        tenant_id -> Uuid,
        name -> Text,
        role -> Text,
        prefix -> Text,
        secret_hash -> Bytea,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> Int8,
        id -> Uuid,
        occurred_at -> Timestamptz,
        actor_id -> Nullable<Uuid>,
        actor -> Text,
        tenant_id -> Nullable<Uuid>,
        action -> Text,
        target -> Text,
        result -> Text,
        request_id -> Text,
        details -> Jsonb,
        prev_hash -> Bytea,
        hash -> Bytea,
    }
}

diesel::table! {
    idempotency_keys (principal_id, key) {
        principal_id -> Uuid,
        key -> Text,
        request_hash -> Bytea,
        response_status -> Int2,
        response_body -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(sessions -> principals (principal_id));
diesel::joinable!(memberships -> tenants (tenant_id));
diesel::joinable!(memberships -> principals (principal_id));
diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(api_keys -> principals (principal_id));

diesel::allow_tables_to_appear_in_same_query!(
    principals,
    sessions,
    tenants,
    memberships,
    api_keys,
    audit_events,
    idempotency_keys,
    authz_generation,
);

diesel::table! {
    authz_generation (singleton) {
        singleton -> Bool,
        generation -> Int8,
    }
}
