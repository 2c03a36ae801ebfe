"""Real programs under LD_PRELOAD=libmtalloc.so behave exactly as they do on glibc's malloc.

Each test runs a program twice, without and with the preload, and requires the same exit
status, standard output and standard error (and, where the program produces files, the same
files). Inputs are generated deterministically; dates and names that would differ between
runs are fixed through the environment. A program missing from the machine is skipped with
the reason; everything else must pass.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import textwrap

import pytest

from conftest import BUILD, ROOT

LIB = BUILD / "libmtalloc.so"
PYTHON = "/usr/bin/python3"
TIMEOUT = 120


def need(program):
    """The program's path, or skip the test when the machine does not have it."""
    path = shutil.which(program) if not os.path.isabs(program) else (program if os.path.exists(program) else None)
    if not path:
        pytest.skip(f"{program} is not installed on this machine")
    return path


def clean_env(extra=None, preload=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTRACE_") and k != "LD_PRELOAD"}
    env.update({"LC_ALL": "C", "TZ": "UTC"})
    if extra:
        env.update(extra)
    if preload:
        env["LD_PRELOAD"] = str(LIB)
    return env


def run(cmd, preload, env=None, cwd=None, input=None):
    return subprocess.run(cmd, env=clean_env(env, preload), cwd=cwd, input=input, capture_output=True,
                          timeout=TIMEOUT)


def same_behaviour(cmd, env=None, cwd=None, input=None, cwd_factory=None):
    """Run cmd without and with the preload; assert identical results; return the latter.

    cwd_factory(label) gives a fresh working directory per run when the program writes files."""
    results = []
    for preload in (False, True):
        where = cwd_factory("preload" if preload else "plain") if cwd_factory else cwd
        results.append(run(cmd, preload, env=env, cwd=where, input=input))
    plain, ours = results
    assert ours.returncode == plain.returncode, (
        f"exit {plain.returncode} without, {ours.returncode} with libmtalloc.so\nstderr: {ours.stderr[-2000:]!r}")
    assert ours.stdout == plain.stdout, f"stdout differs\nplain: {plain.stdout[:1500]!r}\nours:  {ours.stdout[:1500]!r}"
    assert ours.stderr == plain.stderr, f"stderr differs\nplain: {plain.stderr[:1500]!r}\nours:  {ours.stderr[:1500]!r}"
    assert plain.returncode == 0, f"the program failed even without the preload: {plain.stderr[-2000:]!r}"
    return ours


@pytest.fixture(scope="module", autouse=True)
def library_built():
    assert LIB.exists(), f"{LIB} is missing: run make"


def tree_digest(root):
    """sha256 over every file's relative path and contents, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in pathlib.Path(root).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# ---- the library is really in use ----------------------------------------------------------

def test_preload_maps_libmtalloc():
    out = run(["cat", "/proc/self/maps"], preload=True)
    assert out.returncode == 0
    assert b"libmtalloc.so" in out.stdout


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


def test_python3_threads_json_re_sqlite3():
    need(PYTHON)
    out = same_behaviour([PYTHON, "-c", PYTHON_SCRIPT], env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"})
    assert out.stdout.count(b"\n") == 8 + 17 + 1


def test_python3_runs_on_our_heap_and_it_checks_clean():
    need(PYTHON)
    script = PYTHON_SCRIPT + textwrap.dedent("""
        import ctypes
        libc = ctypes.CDLL(None)
        print("heap_check", libc.mt_heap_check())
    """)
    out = run([PYTHON, "-c", script], preload=True, env={"PYTHONMALLOC": "malloc"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.rstrip().endswith(b"heap_check 0")


def test_perl():
    need("perl")
    script = textwrap.dedent(r"""
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
    same_behaviour(["perl", "-e", script])


def test_gcc_compiles_identical_code(tmp_path):
    need("gcc")
    objdump = need("objdump")
    src = ROOT / "tests" / "c" / "test_api.c"

    def compile_in(label):
        d = tmp_path / label
        d.mkdir()
        return d

    cmd = ["gcc", "-std=c11", "-O2", "-g", "-D_GNU_SOURCE", "-I", str(ROOT / "include"), "-I",
           str(ROOT / "tests" / "c"), "-c", str(src), "-o", "out.o"]
    same_behaviour(cmd, cwd_factory=compile_in)
    plain = (tmp_path / "plain" / "out.o").read_bytes()
    ours = (tmp_path / "preload" / "out.o").read_bytes()
    if plain != ours:  # byte-identical is expected; the disassembly is what must match
        dis = [subprocess.run([objdump, "-d", "--no-show-raw-insn", "out.o"], cwd=tmp_path / label,
                              capture_output=True, check=True).stdout for label in ("plain", "preload")]
        assert dis[0] == dis[1]


def test_gxx_compiles_and_the_program_behaves(tmp_path):
    need("g++")
    src = ROOT / "tests" / "progs" / "cxx_containers.cc"

    def compile_in(label):
        d = tmp_path / label
        d.mkdir()
        return d

    same_behaviour(["g++", "-std=c++17", "-O1", "-o", "prog", str(src)], cwd_factory=compile_in)
    outputs = [run([str(tmp_path / label / "prog")], preload=False).stdout for label in ("plain", "preload")]
    assert outputs[0] == outputs[1] and b"failures: 0" in outputs[0]


def test_cxx_new_delete_and_containers():
    prog = BUILD / "progs" / "cxx_containers"
    assert prog.exists(), "build/progs/cxx_containers is built by make test-build"
    out = same_behaviour([str(prog)])
    assert b"failures: 0" in out.stdout
    report = run([str(prog), "--allocator"], preload=True)
    assert report.returncode == 0, report.stdout + report.stderr
    assert b"allocator: mtrace heap_check=0 usable=ok" in report.stdout


def test_git_init_commit_log_gc(tmp_path):
    need("git")
    script = textwrap.dedent("""
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
    env = {
        "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "C O Mitter", "GIT_COMMITTER_EMAIL": "committer@example.com",
        "GIT_AUTHOR_DATE": "2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2024-01-02T03:04:05Z",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": str(tmp_path),
    }

    def fresh(label):
        d = tmp_path / label
        d.mkdir()
        return d

    out = same_behaviour(["bash", "-c", script], env=env, cwd_factory=fresh)
    assert out.stdout.count(b"commit ") >= 12


def test_sqlite3_shell():
    need("sqlite3")
    script = textwrap.dedent("""
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
    out = same_behaviour(["sqlite3", ":memory:"], input=script)
    assert len(out.stdout.splitlines()) == 37 + 1 + 1 + 5


def test_sort(tmp_path):
    need("sort")
    data = tmp_path / "lines.txt"
    with data.open("w") as f:
        x = 12345
        for i in range(300000):
            x = (x * 1103515245 + 12345) % 2**31
            f.write(f"{x % 100003:06d} {x:010d} {'w' * (x % 30)}\n")
    out = same_behaviour(["sort", "--parallel=2", "-k1,1n", "-k2,2r", str(data)])
    assert len(out.stdout.splitlines()) == 300000
    same_behaviour(["sort", "-u", str(data)])


def test_make_j2(tmp_path):
    need("make")
    targets = [f"part{i}.txt" for i in range(24)]
    rules = [f"all: {' '.join(targets)}\n\tcat $^ > all.txt\n"]
    for i, t in enumerate(targets):
        rules.append(f"{t}:\n\tseq 1 {200 * (i + 1)} | sed 's/$$/ {i}/' > $@\n")
    makefile = "".join(rules)

    def fresh(label):
        d = tmp_path / label
        d.mkdir()
        (d / "Makefile").write_text(makefile)
        return d

    results = {}
    for label, preload in (("plain", False), ("preload", True)):
        d = fresh(label)
        r = run(["make", "-s", "-j2"], preload, cwd=d)
        assert r.returncode == 0, r.stderr
        results[label] = (d / "all.txt").read_bytes()
    assert results["plain"] == results["preload"]
    assert results["plain"].count(b"\n") == sum(200 * (i + 1) for i in range(24))


def test_tar_gzip_round_trip(tmp_path):
    need("tar")
    need("gzip")
    src = tmp_path / "src"
    src.mkdir()
    x = 7
    for i in range(40):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        sub = src / f"d{i % 5}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(hashlib.sha256(str(x).encode()).digest() * (1 + i * 300))
        (sub / f"t{i}.txt").write_text("\n".join(f"row {j} {x % (j + 1)}" for j in range(i * 100)))
    script = textwrap.dedent(f"""
        set -e
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C {src} . | gzip -n -6 > a.tgz
        mkdir out
        gzip -dc a.tgz | tar -xf - -C out
        sha256sum a.tgz
        tar -tzvf a.tgz | wc -l
        diff -r {src} out && echo same
    """)

    def fresh(label):
        d = tmp_path / label
        d.mkdir()
        return d

    out = same_behaviour(["bash", "-c", script], cwd_factory=fresh)
    assert out.stdout.endswith(b"same\n")
    assert tree_digest(tmp_path / "plain" / "out") == tree_digest(tmp_path / "preload" / "out") == tree_digest(src)


def test_bash():
    need("bash")
    script = textwrap.dedent("""
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
    same_behaviour(["bash", "-c", script])


def test_awk():
    need("awk")
    script = textwrap.dedent("""
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
    same_behaviour(["awk", script])
