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
        assignments_generation -> Int8,
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
        state -> Text,
        invitation_expires_at -> Nullable<Timestamptz>,
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

diesel::table! {
    environments (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        name -> Text,
        stage -> Text,
        isolation -> Text,
        blueprint -> Text,
        blueprint_version -> Int4,
        cost_tags -> Jsonb,
        state -> Text,
        drift -> Nullable<Jsonb>,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        drift_check_due_at -> Nullable<Timestamptz>,
        expires_set_by -> Nullable<Uuid>,
        schedule_due_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    environment_stops (id) {
        id -> Uuid,
        environment_id -> Uuid,
        tenant_id -> Uuid,
        stopped_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        stop_job_id -> Uuid,
        scheduled -> Bool,
        start_job_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        environment_id -> Uuid,
        operation -> Text,
        state -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_after -> Timestamptz,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamptz>,
        fencing_token -> Int8,
        plan -> Nullable<Jsonb>,
        plan_hash -> Nullable<Text>,
        expected_plan_hash -> Nullable<Text>,
        requested_by -> Nullable<Uuid>,
        approved_by -> Nullable<Uuid>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        cancel_requested_at -> Nullable<Timestamptz>,
        approvals_required -> Int2,
        reason -> Nullable<Text>,
        approval_expires_at -> Nullable<Timestamptz>,
        approved_at -> Nullable<Timestamptz>,
        blueprint_version -> Nullable<Int4>,
        requester_may_approve -> Bool,
        scheduled -> Bool,
    }
}

diesel::table! {
    promotion_evidence (tenant_id, blueprint, version, stage) {
        tenant_id -> Uuid,
        blueprint -> Text,
        version -> Int4,
        stage -> Text,
        environment_id -> Uuid,
        first_ready_at -> Timestamptz,
    }
}

diesel::table! {
    job_approvals (job_id, approver_id) {
        job_id -> Uuid,
        approver_id -> Uuid,
        decision -> Text,
        plan_hash -> Text,
        comment -> Nullable<Text>,
        decided_at -> Timestamptz,
    }
}

diesel::table! {
    job_events (id) {
        id -> Int8,
        job_id -> Uuid,
        occurred_at -> Timestamptz,
        kind -> Text,
        message -> Text,
        details -> Jsonb,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        job_id -> Uuid,
        payload -> Jsonb,
        created_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        claimed_until -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    resources (id) {
        id -> Uuid,
        environment_id -> Uuid,
        kind -> Text,
        name -> Text,
        attributes -> Jsonb,
        cost_tags -> Jsonb,
        state -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    isolation_guarantees (environment_id, layer, mechanism) {
        environment_id -> Uuid,
        layer -> Text,
        mechanism -> Text,
        status -> Text,
        evidence -> Text,
        checked_at -> Timestamptz,
        enforcement -> Text,
        provided_by -> Nullable<Text>,
    }
}

diesel::table! {
    environment_credentials (environment_id) {
        environment_id -> Uuid,
        host -> Text,
        port -> Int4,
        database -> Text,
        schema -> Text,
        username -> Text,
        nonce -> Bytea,
        ciphertext -> Bytea,
        created_at -> Timestamptz,
        key_id -> Nullable<Text>,
    }
}

diesel::joinable!(environments -> tenants (tenant_id));
diesel::joinable!(jobs -> environments (environment_id));
diesel::joinable!(job_events -> jobs (job_id));
diesel::joinable!(job_approvals -> jobs (job_id));
diesel::joinable!(outbox -> jobs (job_id));

diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    environments,
    jobs,
    job_approvals,
    job_events,
    outbox,
    resources,
    isolation_guarantees,
    environment_credentials,
);

diesel::table! {
    mail_outbox (id) {
        id -> Uuid,
        recipient -> Text,
        subject -> Text,
        body -> Text,
        kind -> Text,
        created_at -> Timestamptz,
        send_after -> Timestamptz,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        sent_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    login_throttle (key) {
        key -> Text,
        attempts -> Int4,
        window_start -> Timestamptz,
        next_slot_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    login_known_addresses (account_digest, address) {
        account_digest -> Text,
        address -> Text,
        last_success_at -> Timestamptz,
    }
}

diesel::table! {
    housekeeping (task) {
        task -> Text,
        last_run_at -> Timestamptz,
    }
}

diesel::table! {
    tenant_quotas (tenant_id) {
        tenant_id -> Uuid,
        environments -> Nullable<Int8>,
        queued_jobs -> Nullable<Int8>,
        api_keys -> Nullable<Int8>,
        members -> Nullable<Int8>,
        updated_at -> Timestamptz,
        updated_by -> Nullable<Uuid>,
    }
}

diesel::table! {
    authz_changes (generation) {
        generation -> Int8,
        principal_id -> Uuid,
        tenant_id -> Nullable<Uuid>,
        role -> Text,
        granted -> Bool,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    audit_denial_counts (principal_id, tenant_id, action, window_start) {
        principal_id -> Uuid,
        tenant_id -> Uuid,
        action -> Text,
        window_start -> Timestamptz,
        window_end -> Timestamptz,
        actor -> Text,
        target -> Text,
        denials -> Int8,
        last_request_id -> Text,
    }
}

diesel::table! {
    meter_passes (id) {
        id -> Uuid,
        trigger -> Text,
        state -> Text,
        started_at -> Timestamptz,
        measured_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        environments -> Int4,
        samples -> Int4,
        charges -> Int4,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    meter_cursors (environment_id) {
        environment_id -> Uuid,
        metered_until -> Timestamptz,
        storage_bytes -> Int8,
        rows_read_total -> Int8,
        rows_written_total -> Int8,
    }
}

diesel::table! {
    meter_state (singleton) {
        singleton -> Bool,
        pooled_metered_until -> Nullable<Timestamptz>,
        ticks -> Int4,
    }
}

diesel::table! {
    meter_connection_tallies (environment_id) {
        environment_id -> Uuid,
        peak -> Int4,
        total -> Int8,
    }
}

diesel::table! {
    usage_samples (id) {
        id -> Int8,
        pass_id -> Uuid,
        environment_id -> Uuid,
        tenant_id -> Uuid,
        isolation -> Text,
        region -> Text,
        period_start -> Timestamptz,
        period_end -> Timestamptz,
        standing_seconds -> Numeric,
        storage_bytes -> Int8,
        storage_measured -> Bool,
        connections_peak -> Int4,
        connections_avg -> Numeric,
        rows_read -> Int8,
        rows_written -> Int8,
        cost_tags -> Jsonb,
    }
}

diesel::table! {
    charges (environment_id, sku_id, hour) {
        environment_id -> Uuid,
        sku_id -> Text,
        hour -> Timestamptz,
        tenant_id -> Uuid,
        sku_price_id -> Text,
        region -> Text,
        currency -> Text,
        quantity -> Numeric,
        list_unit_price -> Numeric,
        cost -> Numeric,
        allocation_method -> Nullable<Text>,
        allocated_from -> Nullable<Text>,
        cost_tags -> Jsonb,
    }
}

diesel::table! {
    charges_daily (environment_id, sku_id, day, tags_digest) {
        environment_id -> Uuid,
        sku_id -> Text,
        day -> Date,
        tags_digest -> Text,
        tenant_id -> Uuid,
        currency -> Text,
        unit -> Text,
        region -> Text,
        sku_price_id -> Text,
        list_unit_price -> Numeric,
        allocation_method -> Nullable<Text>,
        allocated_from -> Nullable<Text>,
        cost_tags -> Jsonb,
        quantity -> Numeric,
        cost -> Numeric,
    }
}

diesel::table! {
    charges_daily_tags (tenant_id, day, sku_id, tags_digest) {
        tenant_id -> Uuid,
        sku_id -> Text,
        day -> Date,
        tags_digest -> Text,
        currency -> Text,
        unit -> Text,
        cost_tags -> Jsonb,
        quantity -> Numeric,
        cost -> Numeric,
    }
}

diesel::table! {
    budgets (tenant_id) {
        tenant_id -> Uuid,
        amount -> Numeric,
        currency -> Text,
        period -> Text,
        thresholds -> Array<Int4>,
        updated_at -> Timestamptz,
        updated_by -> Nullable<Uuid>,
    }
}

diesel::table! {
    budget_crossings (tenant_id, period_start, threshold) {
        tenant_id -> Uuid,
        period_start -> Date,
        threshold -> Int4,
        crossed_at -> Timestamptz,
        spent -> Numeric,
    }
}

diesel::table! {
    tenant_policies (tenant_id) {
        tenant_id -> Uuid,
        policy -> Jsonb,
        updated_by -> Nullable<Uuid>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        url -> Text,
        events -> Array<Text>,
        secret_nonce -> Bytea,
        secret_ciphertext -> Bytea,
        secret_key_id -> Text,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    webhook_deliveries (seq) {
        seq -> Int8,
        id -> Uuid,
        webhook_id -> Uuid,
        tenant_id -> Uuid,
        event_type -> Text,
        subject -> Text,
        data -> Jsonb,
        occurred_at -> Timestamptz,
        state -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        claimed_until -> Nullable<Timestamptz>,
        last_status -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        delivered_at -> Nullable<Timestamptz>,
    }
}
