// link: -lsqlite3
/* Recorded by tests/py/test_tracing_e2e.py: a program that uses SQLite itself, as the
 * collector does, must behave the same traced and untraced (its database and the trace
 * are separate files, its SQLite calls go through our malloc). Creates a table in the file
 * given as argv[1], inserts ROWS rows in one transaction, queries them and prints the
 * results. */
#include <sqlite3.h>
#include <stdio.h>

#define ROWS 1000
#define GROUPS 7

static int fail(sqlite3 *db, const char *what)
{
    fprintf(stderr, "e2e_sqlite: %s: %s\n", what, sqlite3_errmsg(db));
    return 1;
}

int main(int argc, char **argv)
{
    sqlite3 *db;
    if (sqlite3_open(argc > 1 ? argv[1] : ":memory:", &db) != SQLITE_OK)
        return fail(db, "open");
    if (sqlite3_exec(db, "CREATE TABLE t (k INTEGER PRIMARY KEY, grp INTEGER, name TEXT);"
                         "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "create");
    sqlite3_stmt *ins;
    if (sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, printf('name-%05d', ?))", -1, &ins, NULL) != SQLITE_OK)
        return fail(db, "prepare insert");
    for (int i = 0; i < ROWS; i++) {
        sqlite3_bind_int(ins, 1, i);
        sqlite3_bind_int(ins, 2, i % GROUPS);
        sqlite3_bind_int(ins, 3, (i * 7919) % 10007);
        if (sqlite3_step(ins) != SQLITE_DONE)
            return fail(db, "insert");
        sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return fail(db, "commit");
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT grp, count(*), sum(k), min(name), max(name) FROM t GROUP BY grp ORDER BY grp",
                           -1, &q, NULL) != SQLITE_OK)
        return fail(db, "prepare query");
    while (sqlite3_step(q) == SQLITE_ROW)
        printf("%d %d %lld %s %s\n", sqlite3_column_int(q, 0), sqlite3_column_int(q, 1),
               (long long)sqlite3_column_int64(q, 2), sqlite3_column_text(q, 3), sqlite3_column_text(q, 4));
    sqlite3_finalize(q);
    return sqlite3_close(db) == SQLITE_OK ? 0 : fail(db, "close");
}
