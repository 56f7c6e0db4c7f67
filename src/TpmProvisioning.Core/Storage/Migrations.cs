namespace TpmProvisioning.Storage;

/// <summary>A versioned schema step. Applied once, in order, inside a transaction.</summary>
public sealed record Migration(int Version, string Name, string Sql);

/// <summary>The schema, as an ordered list of migrations shared by every SQL provider.</summary>
public static class Migrations
{
    public static IReadOnlyList<Migration> All { get; } =
    [
        new(1, "audit log", """
            CREATE TABLE audit_log (
                id {id},
                time_ms {bigint} NOT NULL,
                actor {text} NOT NULL,
                action {text} NOT NULL,
                target {text},
                source {text} NOT NULL,
                outcome {text} NOT NULL,
                detail {text}
            );
            CREATE INDEX ix_audit_log_time ON audit_log (time_ms);
            CREATE INDEX ix_audit_log_action ON audit_log (action);
            """),
        new(2, "provisioning: api keys, device bindings, manufacturing records", """
            CREATE TABLE api_keys (
                key_id {text} NOT NULL PRIMARY KEY,
                name {text} NOT NULL,
                secret_hash {blob} NOT NULL,
                vendors {text} NOT NULL,
                rate_per_minute INTEGER NOT NULL,
                enabled INTEGER NOT NULL,
                created_ms {bigint} NOT NULL
            );
            CREATE TABLE device_bindings (
                vendor {text} NOT NULL,
                serial {text} NOT NULL,
                ek_fingerprint {text} NOT NULL,
                bound_ms {bigint} NOT NULL,
                PRIMARY KEY (vendor, serial)
            );
            CREATE UNIQUE INDEX ux_device_bindings_ek ON device_bindings (ek_fingerprint);
            CREATE TABLE manufacturing_records (
                id {id},
                time_ms {bigint} NOT NULL,
                serial {text} NOT NULL,
                vendor {text} NOT NULL,
                device_name {text} NOT NULL,
                device_version {text} NOT NULL,
                ek_fingerprint {text} NOT NULL,
                ak_name {text} NOT NULL,
                ak_cert_serial {text} NOT NULL,
                ak_cert {blob} NOT NULL,
                api_key_id {text} NOT NULL
            );
            CREATE INDEX ix_manufacturing_records_device ON manufacturing_records (vendor, serial);
            CREATE INDEX ix_manufacturing_records_ek ON manufacturing_records (ek_fingerprint);
            CREATE INDEX ix_manufacturing_records_time ON manufacturing_records (time_ms);
            """),
        new(3, "attestation: registrar agents", """
            CREATE TABLE registrar_agents (
                agent_id {text} NOT NULL PRIMARY KEY,
                aik_tpm {blob} NOT NULL,
                ek_tpm {blob} NOT NULL,
                ekcert {blob},
                mtls_cert {text},
                ip {text},
                port INTEGER,
                regcount INTEGER NOT NULL,
                active INTEGER NOT NULL,
                auth_tag_hash {blob},
                registered_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL,
                activated_ms {bigint}
            );
            """),
        new(4, "attestation: verifier agents", """
            CREATE TABLE verifier_agents (
                agent_id {text} NOT NULL PRIMARY KEY,
                config_json {text} NOT NULL,
                progress_json {text} NOT NULL,
                operational_state INTEGER NOT NULL,
                severity_level INTEGER,
                last_event_id {text},
                attestation_count {bigint} NOT NULL,
                last_received_quote {bigint} NOT NULL,
                last_successful_attestation {bigint} NOT NULL,
                verifier_id {text} NOT NULL,
                added_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            );
            CREATE INDEX ix_verifier_agents_state ON verifier_agents (verifier_id, operational_state);
            """),
        new(5, "kms: master-key check, providers, keys and versions, users, tokens, revocations", """
            CREATE TABLE kms_meta (
                name {text} NOT NULL PRIMARY KEY,
                value {blob} NOT NULL
            );
            CREATE TABLE kms_providers (
                name {text} NOT NULL PRIMARY KEY,
                key_id {text} NOT NULL,
                kdk_wrapped {blob} NOT NULL,
                health {text} NOT NULL,
                created_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            );
            CREATE TABLE kms_keys (
                id {text} NOT NULL PRIMARY KEY,
                name {text} NOT NULL,
                compartment_id {text} NOT NULL,
                vault_id {text} NOT NULL,
                oci_key_id {text} NOT NULL,
                algorithm {text} NOT NULL,
                length INTEGER NOT NULL,
                created_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            );
            CREATE UNIQUE INDEX ux_kms_keys_name ON kms_keys (name);
            CREATE TABLE kms_key_versions (
                id {text} NOT NULL PRIMARY KEY,
                key_id {text} NOT NULL,
                number INTEGER NOT NULL,
                oci_version_id {text} NOT NULL,
                origin {text} NOT NULL,
                material_origin {text} NOT NULL,
                source_key_identifier {text},
                source_key_tier {text},
                material_wrapped {blob} NOT NULL,
                lifecycle_state {text} NOT NULL,
                is_primary INTEGER NOT NULL,
                created_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            );
            CREATE UNIQUE INDEX ux_kms_key_versions_number ON kms_key_versions (key_id, number);
            CREATE TABLE kms_users (
                name {text} NOT NULL PRIMARY KEY,
                password_hash {blob} NOT NULL,
                salt {blob} NOT NULL,
                iterations INTEGER NOT NULL,
                role {text} NOT NULL,
                created_ms {bigint} NOT NULL
            );
            CREATE TABLE kms_tokens (
                token_hash {blob} NOT NULL PRIMARY KEY,
                user_name {text} NOT NULL,
                kind {text} NOT NULL,
                created_ms {bigint} NOT NULL,
                expires_ms {bigint} NOT NULL
            );
            CREATE TABLE kms_revocations (
                agent_id {text} NOT NULL PRIMARY KEY,
                event_id {text},
                type {text},
                time_ms {bigint} NOT NULL,
                detail {text}
            );
            """),
        new(6, "registrar: pending re-registrations; kms: revocation notices seen", """
            ALTER TABLE registrar_agents ADD COLUMN pending_mtls_cert {text};
            ALTER TABLE registrar_agents ADD COLUMN pending_ip {text};
            ALTER TABLE registrar_agents ADD COLUMN pending_port INTEGER;
            ALTER TABLE registrar_agents ADD COLUMN pending_auth_tag_hash {blob};
            ALTER TABLE registrar_agents ADD COLUMN pending_ms {bigint};
            CREATE TABLE kms_revocation_notices (
                notice_hash {text} NOT NULL PRIMARY KEY,
                received_ms {bigint} NOT NULL
            );
            CREATE INDEX ix_kms_revocation_notices_time ON kms_revocation_notices (received_ms);
            """),
        new(7, "station: device states and logs (append-only), operator tokens, station facts of manufacturing records", """
            CREATE TABLE station_device_states (
                id {id},
                time_ms {bigint} NOT NULL,
                serial {text} NOT NULL,
                vendor {text} NOT NULL,
                state {text} NOT NULL,
                address {text},
                detail {text},
                device_name {text}
            );
            CREATE INDEX ix_station_device_states_device ON station_device_states (serial, vendor);
            CREATE INDEX ix_station_device_states_state ON station_device_states (state);
            CREATE TABLE station_device_logs (
                id {id},
                time_ms {bigint} NOT NULL,
                serial {text} NOT NULL,
                vendor {text} NOT NULL,
                log_type {text} NOT NULL,
                line {text} NOT NULL
            );
            CREATE INDEX ix_station_device_logs_device ON station_device_logs (serial, log_type);
            CREATE TABLE station_tokens (
                token_id {text} NOT NULL PRIMARY KEY,
                name {text} NOT NULL,
                secret_hash {blob} NOT NULL,
                created_ms {bigint} NOT NULL
            );
            CREATE TABLE station_records (
                record_id {bigint} NOT NULL PRIMARY KEY,
                ek_issuer {text},
                ca_key_label {text},
                ca_fingerprint {text},
                image_name {text},
                image_sha256 {text}
            );
            """),
        new(8, "settings: persisted configuration of the product (options surface), read at server start", """
            CREATE TABLE server_settings (
                name {text} NOT NULL PRIMARY KEY,
                value {text} NOT NULL,
                updated_ms {bigint} NOT NULL,
                updated_by {text}
            );
            """),
        new(9, "station: signing keys (TPM CA keys: sealed PEM or PKCS#11) and sealed PKCS#11 PINs", """
            CREATE TABLE station_signing_keys (
                label {text} NOT NULL PRIMARY KEY,
                kind {text} NOT NULL,
                algorithm {text} NOT NULL,
                key_size INTEGER NOT NULL,
                fingerprint {text} NOT NULL,
                certificate_pem {text} NOT NULL,
                private_key {text},
                wrap_key_id {text},
                pkcs11_module {text},
                pkcs11_token {text},
                pkcs11_key_label {text},
                pkcs11_key_id {text},
                active INTEGER NOT NULL,
                created_ms {bigint} NOT NULL,
                updated_ms {bigint} NOT NULL
            );
            CREATE UNIQUE INDEX ux_station_signing_keys_active ON station_signing_keys (active) WHERE active = 1;
            CREATE TABLE station_pkcs11_pins (
                module {text} NOT NULL,
                token {text} NOT NULL,
                pin_sealed {text} NOT NULL,
                wrap_key_id {text},
                updated_ms {bigint} NOT NULL,
                PRIMARY KEY (module, token)
            );
            """),
        new(10, "station: images assigned to device families", """
            CREATE TABLE station_image_assignments (
                id {id},
                image_name {text} NOT NULL,
                image_sha256 {text} NOT NULL,
                vendor {text},
                name_pattern {text},
                version_pattern {text},
                created_ms {bigint} NOT NULL,
                actor {text}
            );
            CREATE INDEX ix_station_image_assignments_image ON station_image_assignments (image_name);
            """),
        new(11, "verifier cluster: nodes and agent leases", """
            CREATE TABLE verifier_nodes (
                verifier_id {text} NOT NULL PRIMARY KEY,
                contact {text},
                started_ms {bigint} NOT NULL,
                heartbeat_ms {bigint} NOT NULL,
                lease_ms {bigint} NOT NULL
            );
            ALTER TABLE verifier_agents ADD COLUMN lease_owner {text};
            ALTER TABLE verifier_agents ADD COLUMN lease_expires_ms {bigint};
            CREATE INDEX ix_verifier_agents_lease ON verifier_agents (lease_expires_ms);
            """),
    ];

    public static int Latest => All[^1].Version;
}
