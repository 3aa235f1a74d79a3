-- Bulk loader of bench/scim_million.sh (PostgreSQL): the same rows as scim_million_load.sqlite.sql.
BEGIN;
INSERT INTO identities (id, data_source_id, kind, status, user_name, user_name_lower, external_id,
    display_name, given_name, family_name, email, email_lower, employee_number, department,
    job_title, manager_id, source_doc, version, created_at, updated_at)
SELECT '00000000-0000-7000-8000-' || lpad(n::text, 12, '0'), ds.id, 'person', 'active',
    'user' || n || '@example.org', 'user' || n || '@example.org', 'ext-' || n,
    'User ' || n, 'Given' || n, 'Family' || n, 'user' || n || '@example.org',
    'user' || n || '@example.org', 'E' || n, 'Department ' || (n % 50), 'Engineer', NULL,
    json_build_object(
        'active', true,
        'displayName', 'User ' || n,
        'emails', json_build_array(json_build_object('primary', true, 'type', 'work',
            'value', 'user' || n || '@example.org')),
        'externalId', 'ext-' || n,
        'name', json_build_object('familyName', 'Family' || n, 'givenName', 'Given' || n),
        'title', 'Engineer',
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User',
            json_build_object('department', 'Department ' || (n % 50), 'employeeNumber', 'E' || n),
        'userName', 'user' || n || '@example.org')::text,
    1, (extract(epoch FROM now()) * 1000)::bigint, (extract(epoch FROM now()) * 1000)::bigint
FROM generate_series(1, :n_users) AS n, (SELECT id FROM data_sources WHERE name = 'Million') ds;
INSERT INTO identity_emails (identity_id, position, data_source_id, value_folded, type_folded,
    display_folded, is_primary)
SELECT id, 0, data_source_id, email_lower, 'work', NULL, TRUE FROM identities
WHERE data_source_id = (SELECT id FROM data_sources WHERE name = 'Million');
COMMIT;
