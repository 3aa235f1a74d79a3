-- Bulk loader of bench/scim_million.sh (SQLite): :n_users users of the data source "Million",
-- shaped as POST /Users stores them: the identity row with its projected columns, the resource
-- document, and the folded work e-mail in identity_emails. No audit entries: a fixture.
BEGIN;
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :n_users)
INSERT INTO identities (id, data_source_id, kind, status, user_name, user_name_lower, external_id,
    display_name, given_name, family_name, email, email_lower, employee_number, department,
    job_title, manager_id, source_doc, version, created_at, updated_at)
SELECT printf('00000000-0000-7000-8000-%012d', n), ds.id, 'person', 'active',
    'user' || n || '@example.org', 'user' || n || '@example.org', 'ext-' || n,
    'User ' || n, 'Given' || n, 'Family' || n, 'user' || n || '@example.org',
    'user' || n || '@example.org', 'E' || n, 'Department ' || (n % 50), 'Engineer', NULL,
    json_object(
        'active', json('true'),
        'displayName', 'User ' || n,
        'emails', json_array(json_object('primary', json('true'), 'type', 'work',
            'value', 'user' || n || '@example.org')),
        'externalId', 'ext-' || n,
        'name', json_object('familyName', 'Family' || n, 'givenName', 'Given' || n),
        'title', 'Engineer',
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User',
            json_object('department', 'Department ' || (n % 50), 'employeeNumber', 'E' || n),
        'userName', 'user' || n || '@example.org'),
    1, CAST(strftime('%s', 'now') AS INTEGER) * 1000, CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM seq, (SELECT id FROM data_sources WHERE name = 'Million') ds;
INSERT INTO identity_emails (identity_id, position, data_source_id, value_folded, type_folded,
    display_folded, is_primary)
SELECT id, 0, data_source_id, email_lower, 'work', NULL, TRUE FROM identities
WHERE data_source_id = (SELECT id FROM data_sources WHERE name = 'Million');
COMMIT;
