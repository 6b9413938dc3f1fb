//! The example bodies the OpenAPI document shows for every request and response schema.
//!
//! One tenant (`acme-foods`), one environment and one job run through all of them, so a
//! partner reading the document sees a coherent story. `tests/api/contract.rs` validates every
//! example against its own schema (unknown fields included), so an example cannot drift from
//! what the server answers.

use serde_json::{Value, json};

const TENANT: &str = "0192f5d6-8a1e-7c3b-9a40-1f2e3d4c5b6a";
const ENVIRONMENT: &str = "0192f5d7-1b2c-7d4e-8f50-6a7b8c9d0e1f";
const JOB: &str = "0192f5d7-1b2d-7a1b-b2c3-d4e5f6a7b8c9";
const USER: &str = "0192f5d5-0a0b-7c0d-8e0f-101112131415";
const API_KEY: &str = "0192f5d6-9f00-7e11-9a22-334455667788";
const CREATED: &str = "2026-11-30T09:15:00Z";
const READY: &str = "2026-11-30T09:15:01Z";

fn page(item: Value) -> Value {
    json!({ "items": [item], "next_cursor": "0192f5d7-1b2d-7a1b-b2c3-d4e5f6a7b8c9" })
}

pub fn problem() -> Value {
    json!({
        "type": "https://bulkhead.dev/problems/validation-failed",
        "title": "Some fields are not valid",
        "status": 422,
        "detail": "1 field(s) need changing: slug must match ^[a-z][a-z0-9-]{2,39}$, such as acme-foods",
        "errors": [{ "field": "slug", "message": "must match ^[a-z][a-z0-9-]{2,39}$, such as acme-foods" }]
    })
}

pub fn login_request() -> Value {
    json!({ "email": "dana@acme-foods.example", "password": "correct horse battery staple" })
}

pub fn login_response() -> Value {
    json!({
        "access_token": "bkt_5f0c1e9a7b3d2c4e6f8a0b1c3d5e7f9a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e",
        "token_type": "Bearer",
        "expires_at": "2026-11-30T21:15:00Z"
    })
}

pub fn accept_invitation_request() -> Value {
    json!({ "token": "bki_8e1d3c5b7a9f0e2d4c6b8a0f1e3d5c7b9a1f3e5d7c9b0a2f4e6d8c0b1a3f5e7d", "password": "correct horse battery staple" })
}

pub fn accept_invitation_response() -> Value {
    json!({ "principal_id": USER, "email": "dana@acme-foods.example" })
}

pub fn invitation() -> Value {
    json!({ "mailed_to": "sam@acme-foods.example", "expires_at": "2026-12-03T09:15:00Z" })
}

pub fn me_response() -> Value {
    json!({
        "id": USER,
        "kind": "user",
        "email": "dana@acme-foods.example",
        "display_name": "Dana Ortiz",
        "platform_role": null,
        "api_key_id": null,
        "memberships": [{ "tenant_id": TENANT, "role": "tenant_admin" }]
    })
}

pub fn membership_view() -> Value {
    json!({ "tenant_id": TENANT, "role": "tenant_admin" })
}

pub fn pending_invitation_view() -> Value {
    json!({
        "tenant_id": TENANT,
        "tenant_slug": "acme-foods",
        "tenant_name": "Acme Foods Distribution",
        "role": "approver",
        "invited_at": CREATED,
        "expires_at": "2026-12-03T09:15:00Z"
    })
}

pub fn pending_invitation_page() -> Value {
    json!({ "items": [pending_invitation_view()], "next_cursor": null })
}

pub fn create_partner_request() -> Value {
    json!({ "email": "onboarding@wholesale-partner.example", "display_name": "Wholesale Partner" })
}

pub fn partner_created() -> Value {
    json!({
        "principal_id": "0192f5d4-aaaa-7bbb-8ccc-dddddddddddd",
        "email": "onboarding@wholesale-partner.example",
        "invitation": { "mailed_to": "onboarding@wholesale-partner.example", "expires_at": "2026-12-03T09:15:00Z" }
    })
}

pub fn create_tenant_request() -> Value {
    json!({
        "slug": "acme-foods",
        "name": "Acme Foods Distribution",
        "tier": "shared",
        "region": "eu-west-1",
        "cost_tags": { "business_unit": "wholesale", "cost_center": "cc-4711" }
    })
}

pub fn update_tenant_request() -> Value {
    json!({
        "name": "Acme Foods Distribution GmbH",
        "cost_tags": { "business_unit": "wholesale", "cost_center": "cc-4712" }
    })
}

pub fn tenant_view() -> Value {
    json!({
        "id": TENANT,
        "slug": "acme-foods",
        "name": "Acme Foods Distribution",
        "tier": "shared",
        "region": "eu-west-1",
        "state": "active",
        "cost_tags": { "business_unit": "wholesale", "cost_center": "cc-4711" },
        "created_at": CREATED,
        "updated_at": CREATED
    })
}

pub fn tenant_page() -> Value {
    page(tenant_view())
}

pub fn add_member_request() -> Value {
    json!({ "email": "sam@acme-foods.example", "role": "operator", "display_name": "Sam Lee" })
}

pub fn member_view() -> Value {
    json!({
        "principal_id": "0192f5d8-0000-7111-8222-333344445555",
        "email": "sam@acme-foods.example",
        "display_name": "sam@acme-foods.example",
        "role": "operator",
        "invitation_pending": true,
        "created_at": CREATED,
        "state": "invited",
        "invitation_expires_at": "2026-12-05T09:30:00Z"
    })
}

pub fn member_page() -> Value {
    page(member_view())
}

pub fn member_added() -> Value {
    json!({ "member": member_view(), "invitation": invitation() })
}

pub fn create_api_key_request() -> Value {
    json!({ "name": "edi-gateway", "role": "operator", "expires_in_days": 90 })
}

pub fn api_key_view() -> Value {
    json!({
        "id": API_KEY,
        "name": "edi-gateway",
        "role": "operator",
        "prefix": "bk_7a3f09c2",
        "created_at": CREATED,
        "expires_at": "2027-02-28T09:15:00Z",
        "revoked_at": null,
        "last_used_at": READY
    })
}

pub fn api_key_page() -> Value {
    page(api_key_view())
}

pub fn api_key_created() -> Value {
    json!({ "api_key": api_key_view(), "secret": "bk_7a3f09c2d4e6b8a1c3e5f7092b4d6f8a0c2e4a6b8d0f1e3c5a7b9d" })
}

pub fn create_environment_request() -> Value {
    json!({
        "name": "erp-staging",
        "stage": "staging",
        "isolation": "shared",
        "blueprint": "shared-basic",
        "blueprint_version": 1,
        "cost_tags": { "business_unit": "wholesale", "cost_center": "cc-4711" }
    })
}

pub fn apply_request() -> Value {
    json!({ "plan_job_id": JOB, "reason": "new pick-list index for the Monday wave" })
}

const PLAN_HASH: &str = "5f1c0b7e9a4d2c8b6e3f1a0d9c7b5e3a1f0e2d4c6b8a9f7e5d3c1b0a2e4f6d8c";

pub fn approve_request() -> Value {
    json!({ "plan_hash": PLAN_HASH, "comment": "reviewed with the warehouse team" })
}

pub fn drift_report() -> Value {
    json!({
        "environment_id": ENVIRONMENT,
        "state": "drifted",
        "job_id": JOB,
        "checked_at": READY,
        "scheduled": true,
        "differences": [{
            "object": "grant on schema app to bk_01933b5e_app",
            "change": "update",
            "detail": "privileges CREATE, USAGE (found: USAGE)",
            "expected": {"object_type": "schema", "privileges": ["CREATE", "USAGE"]},
            "found": {"object_type": "schema", "privileges": ["USAGE"]}
        }],
        "isolation_violations": [],
        "next_check_at": READY
    })
}

pub fn reject_request() -> Value {
    json!({ "comment": "not during the quarter-end freeze" })
}

pub fn pending_approval_page() -> Value {
    let mut job = job_view();
    job["state"] = json!("awaiting_approval");
    job["plan_hash"] = json!(PLAN_HASH);
    job["approvals_required"] = json!(2);
    job["approval_expires_at"] = json!(READY);
    page(json!({
        "job": job,
        "environment": "erp-prod",
        "stage": "production",
        "you_may_approve": true
    }))
}

pub fn environment_view() -> Value {
    json!({
        "id": ENVIRONMENT,
        "tenant_id": TENANT,
        "name": "erp-staging",
        "stage": "staging",
        "isolation": "shared",
        "blueprint": "shared-basic",
        "blueprint_version": 1,
        "cost_tags": { "business_unit": "wholesale", "cost_center": "cc-4711" },
        "state": "ready",
        "drift": null,
        "created_at": CREATED,
        "updated_at": READY
    })
}

pub fn environment_page() -> Value {
    page(environment_view())
}

pub fn job_view() -> Value {
    json!({
        "id": JOB,
        "environment_id": ENVIRONMENT,
        "operation": "apply",
        "state": "queued",
        "queue_position": 0,
        "attempts": 0,
        "max_attempts": 3,
        "error": null,
        "plan_hash": null,
        "plan": null,
        "requested_by": USER,
        "created_at": CREATED,
        "started_at": null,
        "finished_at": null,
        "cancel_requested_at": null,
        "approvals_required": 0,
        "reason": "create the environment",
        "approval_expires_at": null,
        "approved_at": null,
        "approvals": [],
        "blueprint_version": null
    })
}

pub fn job_page() -> Value {
    page(job_view())
}

pub fn environment_accepted() -> Value {
    let mut environment = environment_view();
    environment["state"] = json!("pending");
    environment["updated_at"] = json!(CREATED);
    json!({ "environment": environment, "job": job_view() })
}

pub fn job_accepted() -> Value {
    json!({ "job": job_view() })
}

pub fn job_event_page() -> Value {
    page(json!({
        "id": 4812,
        "occurred_at": READY,
        "kind": "step",
        "message": "create schema bk_0192f5d71b2c7d4e8f506a7b8c9d0e1f",
        "details": { "index": 2, "of": 6, "ms": 3 }
    }))
}

pub fn credentials_view() -> Value {
    json!({
        "host": "pg-pool-1.internal",
        "port": 5432,
        "database": "bulkhead_pool",
        "schema": "bk_0192f5d71b2c7d4e8f506a7b8c9d0e1f",
        "username": "bk_0192f5d71b2c7d4e8f506a7b8c9d0e1f_app",
        "password": "k3Xq9vR2mL8pT4wZ6yB1nC5d",
        "url": "postgres://bk_0192f5d71b2c7d4e8f506a7b8c9d0e1f_app:k3Xq9vR2mL8pT4wZ6yB1nC5d@pg-pool-1.internal:5432/bulkhead_pool?options=-csearch_path%3Dbk_0192f5d71b2c7d4e8f506a7b8c9d0e1f"
    })
}

pub fn isolation_view() -> Value {
    json!({
        "environment_id": ENVIRONMENT,
        "isolation": "shared",
        "guarantees": [
            {
                "layer": "data",
                "mechanism": "schema privileges",
                "status": "verified",
                "enforcement": "wall",
                "evidence": "as bk_0192f5d71b2c7d4e8f506a7b8c9d0e1f_app: SELECT on another tenant's table refused (42501)",
                "checked_at": READY
            },
            {
                "layer": "compute",
                "mechanism": "CPU and memory",
                "status": "not_provided",
                "enforcement": "none",
                "evidence": "tenants of a pooled database share its server's CPU and memory",
                "provided_by": "dedicated tier on its own server",
                "checked_at": READY
            }
        ]
    })
}

pub fn audit_event_page() -> Value {
    page(json!({
        "seq": 1207,
        "id": "0192f5d7-1b2e-7000-8000-000000000001",
        "occurred_at": CREATED,
        "actor_id": USER,
        "actor": "dana@acme-foods.example",
        "tenant_id": TENANT,
        "action": "environment.create",
        "target": format!("environment:{ENVIRONMENT}"),
        "result": "success",
        "request_id": "0192f5d7-1b2b-7fff-8000-00000000abcd",
        "details": { "name": "erp-staging", "stage": "staging" },
        "hash": "9f2c4e0b5d8a1f3e6c7b2a9d0e4f8c1b3a5d7e9f0c2b4a6d8e0f1a3c5b7d9e2f"
    }))
}

pub fn verify_report() -> Value {
    json!({ "valid": true, "checked": 1207, "first_broken": null })
}

pub fn quotas_view() -> Value {
    json!({ "quotas": [
        { "quota": "environments", "limit": 100, "used": 12, "source": "override" },
        { "quota": "queued_jobs", "limit": 25, "used": 1, "source": "default" },
        { "quota": "api_keys", "limit": 25, "used": 3, "source": "default" },
        { "quota": "members", "limit": 200, "used": 9, "source": "default" }
    ]})
}

pub fn set_quotas_request() -> Value {
    json!({ "environments": 100, "queued_jobs": null })
}

pub fn costs_view() -> Value {
    json!({
        "currency": "EUR", "from": "2026-11-01", "to": "2026-12-01", "group_by": ["tag:cost_center"],
        "total": "412.775301234567", "total_display": "412.78",
        "groups": [
            { "key": "cc-1042", "cost": "301.5", "cost_display": "301.50",
              "quantities": [{ "unit": "GB-Hours", "quantity": "5210.4" }, { "unit": "Hours", "quantity": "2160" }] },
            { "key": null, "cost": "111.275301234567", "cost_display": "111.28",
              "quantities": [{ "unit": "Hours", "quantity": "720" }] }
        ]
    })
}

pub fn set_budget_request() -> Value {
    json!({ "amount": "500.00", "currency": "EUR", "period": "month", "thresholds": [50, 80, 100] })
}

pub fn budget_view() -> Value {
    json!({
        "amount": "500.00", "currency": "EUR", "period": "month", "thresholds": [50, 80, 100],
        "period_start": "2026-12-01", "period_end": "2027-01-01",
        "spent": "262.004", "spent_display": "262.00", "forecast": "541.47", "forecast_display": "541.47",
        "crossed": [50], "updated_at": "2026-12-01T09:00:00Z"
    })
}

pub fn passes_view() -> Value {
    json!({
        "interval_seconds": 3600, "last_success_at": "2026-12-03T06:00:01Z", "overdue": false,
        "passes": [{
            "id": "01936f3e-7c2a-7b11-8d40-2f1c9a0b5e77", "trigger": "schedule", "state": "succeeded",
            "started_at": "2026-12-03T06:00:00Z", "measured_at": "2026-12-03T06:00:00.4Z",
            "finished_at": "2026-12-03T06:00:01Z", "environments": 1000, "samples": 1000,
            "charges": 4120, "error": null
        }]
    })
}

pub fn policy_view() -> Value {
    json!({
        "stages": {
            "development": {"approvals_required": 0, "requester_may_approve": false,
                "drift_check_interval_hours": 24, "drift_remediation": "repair",
                "schedule": {"time_zone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "07:00", "end": "19:00"},
                "default_ttl_hours": 72},
            "staging": {"approvals_required": 0, "requester_may_approve": false,
                "drift_check_interval_hours": 24, "drift_remediation": "repair"},
            "production": {"approvals_required": 2, "requester_may_approve": false,
                "drift_check_interval_hours": 6, "drift_remediation": "report"}
        },
        "promotion_order": ["development", "staging", "production"],
        "customized": true,
        "updated_at": "2026-12-03T10:00:00Z",
        "updated_by": "0193a5c4-1d2e-7f00-8a00-000000000001"
    })
}

pub fn blueprint_view() -> Value {
    json!({
        "name": "shared-basic", "isolation": "shared", "default": true, "latest_version": 2,
        "versions": [
            {"version": 1, "description": "Schema in the pooled database; orders baseline.",
             "limits": {"connection_limit": 5, "statement_timeout_ms": 30000},
             "baseline": ["0001_orders", "0002_order_lines"], "changes": null},
            {"version": 2, "description": "Adds inventory.",
             "limits": {"connection_limit": 10, "statement_timeout_ms": 30000},
             "baseline": ["0001_orders", "0002_order_lines", "0003_inventory"],
             "changes": {"from_version": 1, "baseline_added": ["0003_inventory"], "baseline_removed": [],
                 "limits_changed": {"connection_limit": {"from": 5, "to": 10}}}}
        ]
    })
}

pub fn blueprint_list() -> Value {
    json!({ "items": [blueprint_view()] })
}

const WEBHOOK: &str = "0192f5d8-2c3d-7e4f-9a5b-6c7d8e9f0a1b";

pub fn create_webhook_request() -> Value {
    json!({
        "url": "https://hooks.acme-foods.example/bulkhead",
        "events": ["job.awaiting_approval", "approval.decided", "environment.ready", "environment.drifted"]
    })
}

pub fn webhook_view() -> Value {
    json!({
        "id": WEBHOOK,
        "url": "https://hooks.acme-foods.example/bulkhead",
        "events": ["job.awaiting_approval", "approval.decided", "environment.ready", "environment.drifted"],
        "created_at": CREATED
    })
}

pub fn webhook_created() -> Value {
    json!({
        "webhook": webhook_view(),
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3s4Bkz2mBcs="
    })
}

pub fn webhook_list() -> Value {
    json!({ "items": [webhook_view()] })
}

pub fn delivery_list() -> Value {
    json!({ "items": [{
        "id": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
        "event_type": "job.awaiting_approval",
        "subject": format!("jobs/{JOB}"),
        "state": "delivered",
        "attempts": 3,
        "last_status": 204,
        "last_error": null,
        "occurred_at": CREATED,
        "next_attempt_at": READY,
        "delivered_at": READY
    }]})
}
