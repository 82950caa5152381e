"""CPU flags from /proc/cpuinfo: what reports print beside a figure and int8 graphs target."""

from edgeyolo.cpuinfo import cpu_flags, cpu_summary, has_vnni

X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
OLD = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp\n"


def test_flags_are_read_from_the_first_processor(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(X86 + "\n" + OLD.replace("avx2", "sse4_2"))
    flags = cpu_flags.__wrapped__(f)
    assert {"avx2", "avx512f", "avx512_vnni"} <= flags and "sse4_2" not in flags
    assert has_vnni(flags)
    assert cpu_summary(flags).endswith("avx2 avx512f avx512_vnni")


def test_no_vnni_and_unknown_flags(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(OLD)
    flags = cpu_flags.__wrapped__(f)
    assert not has_vnni(flags) and cpu_summary(flags).endswith(" avx2")
    f.write_text(ARM)
    assert "asimd" in cpu_flags.__wrapped__(f)
    assert cpu_flags.__wrapped__(tmp_path / "absent") == frozenset()
    assert cpu_summary(frozenset()).endswith("(flags unknown)")


def test_native_bfloat16_is_named():
    """The flags that decide ``--cpu-bf16 auto`` appear beside a figure: a Zen 4 EPYC (AVX-512
    with VNNI and AVX512-BF16) and a Xeon with AMX read differently from a plain AVX-512 CPU."""
    zen4 = frozenset(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    xeon = frozenset(
        ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"]
    )
    assert cpu_summary(zen4).endswith("avx2 avx512f avx512_vnni avx512_bf16")
    assert cpu_summary(xeon).endswith("avx512_vnni avx_vnni avx512_bf16 amx_int8 amx_bf16")
