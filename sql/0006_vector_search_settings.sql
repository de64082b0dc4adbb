-- 0006: make filtered vector searches return k rows.
--
-- An HNSW scan collects hnsw.ef_search (40) candidates and only then applies the WHERE clause;
-- with a filter such as type = 'messages' AND "roomId" = $2 it can return fewer than LIMIT k
-- rows, or none. pgvector 0.8's iterative scan keeps searching until k rows pass the filter (or
-- hnsw.max_scan_tuples is reached). relaxed_order may return rows slightly out of distance order,
-- which is fine for retrieval; strict_order costs more.
--
-- A database-level default, so every role and every pooled connection gets it without the
-- unmodified adapter having to SET anything. It applies to sessions opened after this runs.
-- Superuser: ALTER DATABASE.
DO $$
BEGIN
    -- Calling a vector function loads pgvector, which defines hnsw.iterative_scan; the ALTER
    -- below then checks the value instead of storing an unchecked placeholder.
    PERFORM '[1]'::public.vector;
    EXECUTE format('ALTER DATABASE %I SET hnsw.iterative_scan = relaxed_order', current_database());
END
$$;
