"""Real programs and their inputs, shared by the suites that run them: under
LD_PRELOAD=libmtalloc.so (test_real_programs.py) and recorded by mtrace-run
(test_tracing_e2e.py). Inputs are deterministic; dates and names that would differ between
runs are fixed through the environment. A program missing from the machine is skipped."""
import hashlib
import os
import pathlib
import shutil
import textwrap

import pytest

PYTHON = "/usr/bin/python3"


def need(program):
    """The program's path, or skip the test when the machine does not have it."""
    path = shutil.which(program) if not os.path.isabs(program) else (program if os.path.exists(program) else None)
    if not path:
        pytest.skip(f"{program} is not installed on this machine")
    return path


def clean_env(extra=None, preload=None):
    """The environment without any MTRACE_* variable or preload, in the C locale and UTC;
    `preload`: a library to preload."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTRACE_") and k != "LD_PRELOAD"}
    env.update({"LC_ALL": "C", "TZ": "UTC"})
    if extra:
        env.update(extra)
    if preload:
        env["LD_PRELOAD"] = str(preload)
    return env


def tree_digest(root):
    """sha256 over every file's relative path and contents, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in pathlib.Path(root).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# Threads, json, re, sqlite3, a big dict and string; prints 8 + 17 + 1 lines.
PYTHON_SCRIPT = textwrap.dedent("""
    import hashlib, json, re, sqlite3, threading

    results = []
    lock = threading.Lock()

    def work(n):
        data = {"n": n, "items": [{"i": i, "s": "x" * (i % 50), "f": i / 7} for i in range(3000)]}
        text = json.dumps(data, sort_keys=True)
        back = json.loads(text)
        runs = re.findall(r'"s": "(x+)"', text)
        words = sorted(set(re.sub(r"[^a-z]+", " ", text).split()))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        with lock:
            results.append((n, len(text), len(back["items"]), len(runs), len(words), digest))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in sorted(results):
        print(*r)

    db = sqlite3.connect(":memory:")
    db.execute("create table t (k integer primary key, grp integer, name text, blob blob)")
    db.executemany("insert into t values (?, ?, ?, ?)",
                   ((i, i % 17, "name%05d" % i, bytes(i % 251 for _ in range(i % 300))) for i in range(20000)))
    db.execute("create index t_grp on t (grp, name)")
    for row in db.execute("select grp, count(*), sum(length(blob)), min(name), max(name) from t group by grp"):
        print(*row)
    db.close()

    table = {}
    for i in range(200000):
        table[str(i)] = [i] * (i % 5)
    big = "".join(chr(97 + i % 26) for i in range(1000000))
    print(len(table), sum(len(v) for v in table.values()), big.count("abc"))
""")

PYTHON_ENV = {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}

PERL_SCRIPT = textwrap.dedent(r"""
    use strict; use warnings;
    my %h; my @words;
    for my $i (0 .. 200000) {
        my $k = sprintf("k%06d", ($i * 7919) % 100003);
        push @{ $h{substr($k, 0, 4)} }, $i;
        push @words, scalar reverse($k) if $i % 3 == 0;
    }
    my $text = join(" ", @words);
    my $count = () = $text =~ /(\d)\1/g;
    my @sorted = sort { $a cmp $b } @words;
    my $packed = pack("N*", 1 .. 50000);
    my @back = unpack("N*", $packed);
    print scalar(keys %h), " ", scalar(@words), " $count $sorted[0] $sorted[-1] ", scalar(@back), "\n";
    for my $k (sort keys %h) { print "$k ", scalar(@{ $h{$k} }), "\n" if $k =~ /5$/; }
    my $s = ""; $s .= chr(65 + $_ % 26) x ($_ % 40) for 0 .. 20000;
    print length($s), " ", ($s =~ tr/A//), "\n";
""")

GIT_SCRIPT = textwrap.dedent("""
    set -e
    git init -q -b main repo
    cd repo
    for i in $(seq 1 12); do
        seq 1 $((i * 500)) | sed "s/^/line $i /" > file$((i % 4)).txt
        mkdir -p dir$((i % 3)) && printf 'content %s\\n' "$i" > dir$((i % 3))/note$i
        git add -A
        git commit -q -m "commit $i" -m "body of commit $i"
    done
    git checkout -q -b topic HEAD~3
    echo topic > topic.txt && git add topic.txt && git commit -q -m topic
    git checkout -q main
    git merge -q --no-edit topic
    git log --stat --format='%H %an %ad %s' --date=iso
    git gc -q
    git fsck --no-progress
    git count-objects -v | grep -E '^(count|in-pack|packs):'
    git rev-parse HEAD HEAD^{tree}
    git cat-file -p HEAD
    git diff HEAD~5 --stat
""")


def git_env(home):
    """Fixed names and dates, no user or system configuration."""
    return {
        "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "C O Mitter", "GIT_COMMITTER_EMAIL": "committer@example.com",
        "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": str(home),
    }


# Prints 37 + 1 + 1 + 5 lines.
SQLITE_SCRIPT = textwrap.dedent("""
    create table t (k integer primary key, grp integer, name text, payload blob);
    with recursive n(i) as (select 1 union all select i + 1 from n where i < 50000)
    insert into t select i, i % 37, printf('name-%06d', (i * 7919) % 50021), zeroblob(i % 700) from n;
    create index t_name on t (name);
    select grp, count(*), sum(length(payload)), min(name), max(name) from t group by grp order by grp;
    select count(*) from t where name like 'name-01%';
    delete from t where k % 3 = 0;
    vacuum;
    select count(*), sum(k) from t;
    select name from t order by name desc limit 5;
""").encode()

BASH_SCRIPT = textwrap.dedent("""
    declare -A count
    words=()
    for i in $(seq 1 20000); do
        w="w$(( (i * 7919) % 1009 ))"
        count[$w]=$(( ${count[$w]:-0} + 1 ))
        (( i % 10 == 0 )) && words+=("$w")
    done
    s=""
    for w in "${words[@]}"; do s+="${w^^}-"; done
    echo "${#count[@]} ${#words[@]} ${#s} ${s:0:40}"
    echo "$(printf '%s\\n' "${!count[@]}" | sort | head -3 | tr '\\n' ' ')"
    f() { local x="$1"; echo "${x//w/W}"; }
    echo "$(f w1w2w3) ${s//W/} ${#s}" | md5sum
""")

AWK_SCRIPT = textwrap.dedent("""
    BEGIN {
        for (i = 1; i <= 200000; i++) {
            k = sprintf("k%05d", (i * 7919) % 40009)
            sum[substr(k, 1, 4)] += i
            text = text (i % 1000 == 0 ? k " " : "")
        }
        n = split(text, parts, " ")
        for (g in sum) total += sum[g]
        printf "%d %d %d %s\\n", length(sum), n, total, parts[n]
        s = ""; for (i = 0; i < 30000; i++) s = s sprintf("%c", 65 + i % 26)
        print length(s), gsub(/ABC/, "x", s), length(s)
    }
""")
