// Copied into FerretDB's internal/backends/sqlite after patch_ferretdb.sh by
// tests/integration/test_document_server_patches.py, which then runs this package's tests, FerretDB's
// own included (a testdata directory: `go test ./...` of the wrapper skips it).
package sqlite

import (
	"context"
	"database/sql"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/fsql"
	"github.com/FerretDB/FerretDB/internal/util/iterator"
	"github.com/FerretDB/FerretDB/internal/util/must"
	"github.com/FerretDB/FerretDB/internal/util/state"
	"github.com/FerretDB/FerretDB/internal/util/testutil"
)

func TestYiwangOneStatementRunsWithoutATransaction(t *testing.T) {
	sqlDB, err := sql.Open("sqlite", "file:"+t.TempDir()+"/w.sqlite")
	require.NoError(t, err)
	db := fsql.WrapDB(sqlDB, "yiwang", slog.New(slog.NewTextHandler(os.Stderr, nil)))
	t.Cleanup(func() { db.Close() })

	for statements, want := range map[int]string{0: "*fsql.Tx", 1: "*fsql.DB", 2: "*fsql.Tx", 5: "*fsql.Tx"} {
		var got string
		err := yiwangWrite(context.Background(), db, statements, func(e yiwangExecer) error {
			switch e.(type) {
			case *fsql.DB:
				got = "*fsql.DB"
			case *fsql.Tx:
				got = "*fsql.Tx"
			}
			_, err := e.ExecContext(context.Background(), "SELECT 1")
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, want, got, "%d statements", statements)
	}

	for _, c := range []struct{ n, batch, want int }{{1, 100, 1}, {100, 100, 1}, {101, 100, 2}, {3, 2, 2}, {0, 100, 0}, {1, 0, 2}} {
		assert.Equal(t, c.want, yiwangBatches(c.n, c.batch), "%d documents in batches of %d", c.n, c.batch)
	}
}

func TestYiwangInsertAllAndUpdateAllGoThroughIt(t *testing.T) {
	source, err := os.ReadFile("collection.go")
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(source), "yiwangWrite(ctx, db, "))
	assert.NotContains(t, string(source), "InTransaction")
}

func TestYiwangWritesKeepTheirAtomicity(t *testing.T) {
	ctx := testutil.Ctx(t)
	sp, err := state.NewProvider("")
	require.NoError(t, err)
	b, err := NewBackend(&NewBackendParams{URI: testutil.TestSQLiteURI(t, ""), L: testutil.Logger(t), P: sp, BatchSize: 2})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	db, err := b.Database(testutil.DatabaseName(t))
	require.NoError(t, err)
	c, err := db.Collection(testutil.CollectionName(t))
	require.NoError(t, err)

	doc := func(id string, v int32) *types.Document { return must.NotFail(types.NewDocument("_id", id, "v", v)) }
	ids := func() []string {
		res, err := c.Query(ctx, nil)
		require.NoError(t, err)
		docs, err := iterator.ConsumeValues(res.Iter)
		require.NoError(t, err)
		var out []string
		for _, d := range docs {
			out = append(out, must.NotFail(d.Get("_id")).(string))
		}
		return out
	}

	// One statement: a duplicate _id is still told as such.
	_, err = c.InsertAll(ctx, &backends.InsertAllParams{Docs: []*types.Document{doc("a", 1)}})
	require.NoError(t, err)
	_, err = c.InsertAll(ctx, &backends.InsertAllParams{Docs: []*types.Document{doc("a", 2)}})
	assert.True(t, backends.ErrorCodeIs(err, backends.ErrorCodeInsertDuplicateID), "%v", err)

	// Two batches (two statements): the duplicate in the second undoes the first.
	_, err = c.InsertAll(ctx, &backends.InsertAllParams{Docs: []*types.Document{doc("b", 1), doc("c", 1), doc("a", 3)}})
	assert.True(t, backends.ErrorCodeIs(err, backends.ErrorCodeInsertDuplicateID), "%v", err)
	assert.Equal(t, []string{"a"}, ids())

	_, err = c.InsertAll(ctx, &backends.InsertAllParams{Docs: []*types.Document{doc("b", 1), doc("c", 1), doc("d", 1)}})
	require.NoError(t, err)

	res, err := c.UpdateAll(ctx, &backends.UpdateAllParams{Docs: []*types.Document{doc("b", 7)}})
	require.NoError(t, err)
	assert.Equal(t, int32(1), res.Updated)
	res, err = c.UpdateAll(ctx, &backends.UpdateAllParams{Docs: []*types.Document{doc("c", 7), doc("d", 7), doc("zz", 7)}})
	require.NoError(t, err)
	assert.Equal(t, int32(2), res.Updated)
	assert.Equal(t, []string{"a", "b", "c", "d"}, ids())
}
