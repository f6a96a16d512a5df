"""ISA detection: canned /proc/cpuinfo, macOS sysctl, numpy and torch capability inputs."""
from __future__ import annotations

import sys

from benchmark.measure.hardware import (
    IsaInfo, detect_isa, isa_from_texts, normalize_arch, parse_numpy_features, parse_proc_cpuinfo, parse_sysctl,
    parse_torch_capability,
)

_BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht " \
        "syscall " \
        "nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology cpuid pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 " \
        "movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm bmi1 avx2 smep bmi2 erms"


def cpuinfo(model: str, extra: str, flags_key: str = "flags") -> str:
    return (f"processor\t: 0\nvendor_id\t: x\ncpu family\t: 25\nmodel name\t: {model}\nstepping\t: 1\n"
            f"{flags_key}\t\t: {_BASE} {extra}\nbugs\t\t: sysret_ss_attrs\n\nprocessor\t: 1\nmodel name\t: {model}\n")


EPYC_AVX2 = cpuinfo("AMD EPYC 7B13", "sha_ni clzero xsaveopt")  # Milan: AVX2, no AVX-512, no VNNI
EPYC_GENOA = cpuinfo("AMD EPYC 9B14", "avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni "
                                      "avx512_bitalg avx512_vpopcntdq")
SKYLAKE = cpuinfo("Intel(R) Xeon(R) Platinum 8168 CPU @ 2.70GHz", "avx512f avx512dq avx512cd avx512bw avx512vl")
CASCADE = cpuinfo("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "avx512f avx512dq avx512cd avx512bw avx512vl "
                                                                    "avx512_vnni")
SAPPHIRE = cpuinfo("Intel(R) Xeon(R) Platinum 8488C", "avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 "
                                                      "avx_vnni amx_bf16 avx512_fp16 amx_tile amx_int8")
ALDER = cpuinfo("12th Gen Intel(R) Core(TM) i7-12700H", "avx_vnni")  # AVX-VNNI without AVX-512
GRAVITON3 = ("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
             "asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc "
             "flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\nCPU implementer\t: 0x41\n")
GRAVITON2 = ("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
             "asimdrdm lrcpc dcpop asimddp ssbs\n")

APPLE_M2 = """machdep.cpu.brand_string: Apple M2
hw.optional.arm.FEAT_FP16: 1
hw.optional.arm.FEAT_DotProd: 1
hw.optional.arm.FEAT_BF16: 1
hw.optional.arm.FEAT_I8MM: 1
hw.optional.arm.FEAT_SME: 0
hw.optional.neon: 1
hw.optional.floatingpoint: 1
"""
APPLE_M1 = APPLE_M2.replace("Apple M2", "Apple M1").replace("FEAT_BF16: 1", "FEAT_BF16: 0").replace(
    "FEAT_I8MM: 1", "FEAT_I8MM: 0")
INTEL_MAC_ICELAKE = """machdep.cpu.brand_string: Intel(R) Core(TM) i7-1068NG7 CPU @ 2.30GHz
machdep.cpu.features: FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36 CLFSH DS ACPI MMX FXSR SSE SSE2 SS HTT TM PBE SSE3 PCLMULQDQ DTES64 MON DSCPL VMX EST TM2 SSSE3 FMA CX16 TPR PDCM SSE4.1 SSE4.2 x2APIC MOVBE POPCNT AES PCID XSAVE OSXSAVE SEGLIM64 TSCTMR AVX1.0 RDRAND F16C
machdep.cpu.leaf7_features: RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 AVX2 FDPEO SMEP BMI2 ERMS INVPCID FPU_CSDS AVX512F AVX512DQ RDSEED ADX SMAP AVX512IFMA CLFSOPT IPT AVX512CD SHA AVX512BW AVX512VL AVX512VBMI UMIP PKU GFNI VAES VPCLMULQDQ AVX512VNNI AVX512BITALG AVX512VPOPCNTDQ RDPID SGXLC FSREPMOV MDCLEAR IBRS STIBP L1DF ACAPMSR SSBD
hw.optional.avx512vnni: 1
"""
INTEL_MAC_COFFEE = """machdep.cpu.brand_string: Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz
machdep.cpu.features: FPU VME DE PSE TSC MSR PAE SSE3 SSSE3 FMA CX16 SSE4.1 SSE4.2 POPCNT AES XSAVE AVX1.0 RDRAND F16C
machdep.cpu.leaf7_features: RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 HLE AVX2 SMEP BMI2 ERMS INVPCID RTM FPU_CSDS MPX RDSEED
"""
NUMPY_SKYLAKE_WINDOWS = {"SSE": True, "AVX": True, "F16C": True, "FMA3": True, "AVX2": True, "AVX512F": True,
                         "AVX512CD": True, "AVX512VL": True, "AVX512BW": True, "AVX512DQ": True, "AVX512VNNI": False,
                         "AVX512BF16": False, "AVX512FP16": False, "NEON": False, "ASIMD": False, "ASIMDDP": False,
                         "ASIMDHP": False, "SVE": False}


def test_amd_epyc_avx2_only_has_no_vnni_and_says_so():
    isa = isa_from_texts("x86_64", cpuinfo=EPYC_AVX2, torch_capability="AVX2")
    assert isa.cpu_model == "AMD EPYC 7B13"
    assert isa.avx2 is True and isa.avx512 is False
    assert isa.vnni is False and isa.int8_fast is False and isa.amx is False and isa.bf16_native is False
    assert isa.unknown == frozenset()  # /proc/cpuinfo sees every x86 flag
    summary = isa.summary()
    assert "AMD EPYC 7B13" in summary and "AVX2" in summary and "no VNNI" in summary
    assert "INT8 dot products: no" in summary and "(torch: AVX2)" in summary


def test_amd_epyc_genoa_with_avx512_vnni_and_bf16():
    isa = isa_from_texts("x86_64", cpuinfo=EPYC_GENOA)
    assert isa.avx512 is True and isa.vnni is True and isa.int8_fast is True and isa.bf16_native is True
    assert "avx512_vnni" in isa.flags and "avx_vnni" not in isa.flags
    assert "AVX512-VNNI" in isa.features() and "AVX512-BF16" in isa.features()


def test_intel_skylake_avx512_without_vnni_is_not_int8_fast():
    isa = isa_from_texts("x86_64", cpuinfo=SKYLAKE, torch_capability="AVX512")
    assert isa.avx512 is True and isa.vnni is False and isa.int8_fast is False
    assert "AVX-512" in isa.features() and "no VNNI" in isa.summary()


def test_intel_cascade_lake_vnni_and_sapphire_rapids_amx():
    cascade = isa_from_texts("x86_64", cpuinfo=CASCADE)
    assert cascade.vnni is True and cascade.int8_fast is True and cascade.bf16_native is False
    spr = isa_from_texts("x86_64", cpuinfo=SAPPHIRE)
    assert spr.amx is True and spr.int8_fast is True and spr.bf16_native is True
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"} <= spr.flags
    assert "no AMX" not in spr.summary() and "AMX" in spr.features()


def test_alder_lake_avx_vnni_without_avx512():
    isa = isa_from_texts("x86_64", cpuinfo=ALDER)
    assert isa.avx512 is False and isa.vnni is True and isa.int8_fast is True
    assert "AVX-VNNI" in isa.features() and "AVX-512" not in isa.features()


def test_arm_linux_features_line():
    g3 = isa_from_texts("aarch64", cpuinfo=GRAVITON3)
    assert g3.arch == "arm64"
    assert {"neon", "dotprod", "i8mm", "bf16", "sve", "fp16"} <= g3.flags
    assert g3.int8_fast is True and g3.bf16_native is True and g3.avx2 is False and g3.vnni is False
    g2 = isa_from_texts("aarch64", cpuinfo=GRAVITON2)
    assert g2.int8_fast is True and g2.bf16_native is False and "sve" not in g2.flags


def test_apple_silicon_sysctl():
    m2 = isa_from_texts("arm64", sysctl=APPLE_M2)
    assert m2.cpu_model == "Apple M2"
    assert m2.int8_fast is True and m2.bf16_native is True and {"neon", "dotprod", "i8mm", "bf16"} <= m2.flags
    m1 = isa_from_texts("arm64", sysctl=APPLE_M1)
    assert m1.bf16_native is False and "i8mm" not in m1.flags and m1.int8_fast is True  # dot product, no i8mm
    assert "sme" not in m1.flags and "sme" not in m1.unknown  # FEAT_SME: 0 is a "no"
    assert "sve" in m1.unknown  # no sysctl key for it: unknown, not absent


def test_intel_mac_sysctl_feature_lists():
    ice = isa_from_texts("x86_64", sysctl=INTEL_MAC_ICELAKE)
    assert ice.avx512 is True and ice.vnni is True and "avx512_vnni" in ice.flags
    coffee = isa_from_texts("x86_64", sysctl=INTEL_MAC_COFFEE)
    assert coffee.avx2 is True and coffee.avx512 is False
    assert coffee.vnni is False and coffee.int8_fast is False  # the feature lists see every x86 flag


def test_windows_torch_capability_only_leaves_vnni_unknown():
    isa = isa_from_texts("AMD64", torch_capability="AVX2", cpu_model="AMD Ryzen 9 5950X 16-Core Processor")
    assert isa.arch == "x86_64" and isa.avx2 is True
    assert isa.vnni is None and isa.int8_fast is None and isa.bf16_native is None
    assert "avx512_vnni" in isa.unknown
    summary = isa.summary()
    assert "VNNI unknown" in summary and "INT8 dot products: unknown" in summary


def test_windows_numpy_features_see_avx512_vnni_but_not_avx_vnni():
    isa = isa_from_texts("AMD64", numpy_features=NUMPY_SKYLAKE_WINDOWS, torch_capability="AVX512")
    assert isa.avx512 is True
    assert "avx512_vnni" not in isa.flags and "avx512_vnni" not in isa.unknown  # numpy says no
    assert "avx_vnni" in isa.unknown and "amx_int8" in isa.unknown  # numpy cannot see these
    assert isa.vnni is None and isa.int8_fast is None
    with_vnni = isa_from_texts("AMD64", numpy_features={**NUMPY_SKYLAKE_WINDOWS, "AVX512VNNI": True})
    assert with_vnni.vnni is True and with_vnni.int8_fast is True


def test_torch_capability_strings():
    assert parse_torch_capability("AVX512").present >= {"avx512f", "avx512bw", "avx512vl", "avx2"}
    assert parse_torch_capability("AVX2").present == {"avx2", "fma"}
    for text in ("DEFAULT", "ZVECTOR", "", None):
        assert parse_torch_capability(text).present == frozenset()
    assert "sve" in parse_torch_capability("SVE256").present
    only_default = isa_from_texts("x86_64", torch_capability="DEFAULT")
    assert only_default.avx2 is None and only_default.torch_capability == "DEFAULT"


def test_parsers_on_empty_or_odd_input_see_nothing():
    assert parse_proc_cpuinfo("").seen == frozenset()
    assert parse_sysctl("sysctl: unknown oid 'machdep.cpu'").seen == frozenset()
    assert parse_numpy_features({}).present == frozenset()
    isa = isa_from_texts("riscv64", cpuinfo="isa\t: rv64imafdc\n")
    assert isa.arch == "riscv64" and isa.int8_fast is None and isa.flags == frozenset()
    assert normalize_arch("ARM64") == "arm64" and normalize_arch("i686") == "x86_64"


def test_to_dict_is_json_ready_and_carries_the_derived_fields():
    import json

    d = isa_from_texts("x86_64", cpuinfo=EPYC_AVX2).to_dict()
    json.dumps(d)
    assert d["vnni"] is False and d["int8_fast"] is False and d["summary"].startswith("x86_64 AMD EPYC 7B13")
    assert d["flags"] == sorted(d["flags"])


def test_detect_isa_on_this_machine_agrees_with_its_sources():
    isa = detect_isa()
    assert isinstance(isa, IsaInfo)
    assert isa.sources, "at least numpy or torch can be read on every platform"
    if sys.platform.startswith("linux"):
        text = open("/proc/cpuinfo").read()
        expected = parse_proc_cpuinfo(text, isa.arch)
        assert "/proc/cpuinfo" in isa.sources
        assert expected.present <= isa.flags
        if isa.arch == "x86_64":
            assert isa.vnni == bool(expected.present & {"avx512_vnni", "avx_vnni"})
