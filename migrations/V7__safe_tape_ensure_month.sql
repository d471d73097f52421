-- tape_ensure_month, made safe to be SECURITY DEFINER (PostgreSQL's "Writing SECURITY
-- DEFINER Functions Safely"), and a re-made month that keeps its archive on record.
--
-- V6's function ran with `SET search_path FROM CURRENT`, named its tables unqualified and
-- could be executed by PUBLIC: pg_temp, searched first when it is not listed, let any role
-- with CONNECT and TEMP put a temporary `tape_partitions` (with a trigger) in front of the
-- real one and run code as the role that migrated. Now:
--   * search_path is fixed to the schema polytape migrated into, with pg_temp last;
--   * every table and function is named with its schema (pg_catalog's too);
--   * EXECUTE is revoked from PUBLIC: grant it to the role polytape writes with
--     (`GRANT EXECUTE ON FUNCTION tape_ensure_month(date) TO writer;`, README).
--
-- A month that retention dropped and a late trade (a backfill of an old window) brings back
-- keeps `archived_at` / `archive_path` / `archive_rows` and is marked `late_rows_since`:
-- `polytape archive` then writes the late rows to a file of their own (listed in
-- `late_archives`) instead of over the month's archive, and retention keeps the partition
-- until it has.
ALTER TABLE tape_partitions
    ADD COLUMN late_rows_since timestamptz,
    ADD COLUMN late_archives text[] NOT NULL DEFAULT '{}';
DO $migration$
DECLARE
    s text := pg_catalog.current_schema();
BEGIN
    EXECUTE pg_catalog.format($fn$
CREATE OR REPLACE FUNCTION %1$I.tape_ensure_month(m date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = %1$I, pg_temp AS $body$
DECLARE
    first date := pg_catalog.date_trunc('month', m)::date;
    lo timestamptz := first::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (first + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    part text := 'trade_tape_' || pg_catalog.to_char(first, 'YYYY_MM');
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('polytape: tape partitions'));
    IF pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %1$L, part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TABLE %%I.%%I (LIKE %%I.trade_tape INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
        %1$L, part, %1$L);
    EXECUTE pg_catalog.format(
        'WITH moved AS (DELETE FROM %%I.trade_tape_default WHERE traded_at >= %%L AND traded_at < %%L
                        RETURNING *)
         INSERT INTO %%I.%%I SELECT * FROM moved', %1$L, lo, hi, %1$L, part);
    EXECUTE pg_catalog.format(
        'ALTER TABLE %%I.trade_tape ATTACH PARTITION %%I.%%I FOR VALUES FROM (%%L) TO (%%L)',
        %1$L, %1$L, part, lo, hi);
    INSERT INTO %1$I.tape_partitions (name, month) VALUES (part, first)
        ON CONFLICT (name) DO UPDATE
        SET created_at = pg_catalog.now(), compacted_at = NULL, dropped_at = NULL,
            late_rows_since = CASE WHEN tape_partitions.dropped_at IS NOT NULL
                                   THEN pg_catalog.now()
                                   ELSE tape_partitions.late_rows_since END;
    RETURN true;
END $body$
$fn$, s);
    EXECUTE pg_catalog.format(
        'REVOKE EXECUTE ON FUNCTION %I.tape_ensure_month(date) FROM PUBLIC', s);
END
$migration$;
