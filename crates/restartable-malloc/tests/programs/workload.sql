-- A scripted sqlite3 workload: create, insert a few hundred thousand rows, index,
-- query, update, delete. Output depends only on the data.
PRAGMA journal_mode = WAL;
PRAGMA cache_size = -16000;
PRAGMA synchronous = OFF;
CREATE TABLE items(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, score REAL, payload BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
INSERT INTO items(grp, name, score, payload)
SELECT i % 997, 'name-' || (i * 7919 % 300007), (i * 37 % 1000) / 10.0, zeroblob(i % 200)
FROM n;
CREATE INDEX items_grp ON items(grp, score);
CREATE INDEX items_name ON items(name);
SELECT count(*), sum(grp), round(sum(score), 1), sum(length(payload)) FROM items;
SELECT grp, count(*), round(avg(score), 3) FROM items GROUP BY grp ORDER BY 3 DESC, 1 LIMIT 5;
SELECT name FROM items WHERE name > 'name-29' ORDER BY name LIMIT 5;
SELECT count(DISTINCT name), max(length(name)) FROM items;
CREATE TABLE groups AS SELECT grp, group_concat(id, ',') AS ids FROM items WHERE id % 100 = 0 GROUP BY grp;
SELECT count(*), sum(length(ids)) FROM groups;
SELECT g.grp, count(*) FROM groups g JOIN items i ON i.grp = g.grp WHERE i.score > 90 GROUP BY g.grp ORDER BY 2 DESC, 1 LIMIT 3;
UPDATE items SET name = upper(name), score = score + 1 WHERE grp < 100;
DELETE FROM items WHERE id % 3 = 0;
SELECT count(*), round(sum(score), 1), count(DISTINCT upper(name)) FROM items;
PRAGMA integrity_check;
