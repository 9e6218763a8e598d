"""zarr-python side of cli_zarr_test.cc.

  check STORE X0 Y0 Z0 X1 Y1 Z1 RAW [COMPRESSOR]
      opens STORE/world_voxels with zarr-python and compares the box
      [X0, X1) x [Y0, Y1) x [Z0, Z1) (array index [z, y, x]) with RAW (raw
      uint8, x fastest); with COMPRESSOR, checks the codec id too.
  make STORE COMPRESSOR SEP WX WY WZ X0 Y0 Z0 X1 Y1 Z1 RAW SEED
      creates a voxdb-layout array of world shape [WZ, WY, WX] with the
      compressor (zstd|blosc) and dimension separator (.|/), writes seeded
      random materials 0..15 in the box and saves that box to RAW.
  make-bad STORE WX WY WZ
      an array with 64^3 chunks (import must refuse it).
  check-lod STORE LEVELS X0 Y0 Z0 X1 Y1 Z1
      checks lod_pyramid/lod_1 .. lod_LEVELS over the box against a
      brute-force mode downsampling of world_voxels (each voxel the most
      common of its 2x2x2 children, ties to non-air, then to the smaller id),
      and their .zattrs / .zarray.
  voxel STORE X Y Z
      prints world_voxels[z, y, x].

Exits 0 on success, 1 on a mismatch, 2 on misuse.
"""
import sys

import numcodecs
import numpy as np
import zarr


def box_args(a):
    x0, y0, z0, x1, y1, z1 = (int(v) for v in a)
    return (slice(z0, z1), slice(y0, y1), slice(x0, x1)), (z1 - z0, y1 - y0, x1 - x0)


def differ(what, got, want, want_name):
    """True (after printing the first difference) when got != want."""
    if np.array_equal(got, want):
        return False
    diff = np.argwhere(got != want)
    z, y, x = diff[0]
    print(f"{what}{len(diff)} voxels differ; first at x={x} y={y} z={z}: "
          f"zarr {got[z, y, x]} {want_name} {want[z, y, x]}")
    return True


def check(argv):
    store, box, raw = argv[0], argv[1:7], argv[7]
    index, shape = box_args(box)
    group = zarr.open_group(store, mode="r")
    array = group["world_voxels"]
    attrs = dict(group.attrs)
    if attrs.get("coordinate_system") != "EPSG:4087" or attrs.get("voxel_size_meters") != 0.25:
        print("bad .zattrs", attrs)
        return 1
    if array.chunks != (128, 128, 128) or array.dtype != np.uint8 or array.fill_value != 0:
        print("bad .zarray", array.chunks, array.dtype, array.fill_value)
        return 1
    if len(argv) > 8 and array.compressor.codec_id != argv[8]:
        print("compressor", array.compressor.codec_id, "expected", argv[8])
        return 1
    got = array[index]
    want = np.fromfile(raw, dtype=np.uint8).reshape(shape)
    if differ("box offsets: ", got, want, "expected"):
        return 1
    print(f"ok {want.size} voxels, {np.count_nonzero(want)} non-zero")
    return 0


def compressor_of(name):
    if name == "zstd":
        return numcodecs.Zstd(level=3)
    if name == "blosc":
        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.NOSHUFFLE)
    raise SystemExit(2)


def make(argv):
    store, comp, sep = argv[0], argv[1], argv[2]
    wx, wy, wz = (int(v) for v in argv[3:6])
    index, shape = box_args(argv[6:12])
    raw, seed = argv[12], int(argv[13])
    group = zarr.open_group(zarr.DirectoryStore(store, dimension_separator=sep), mode="w")
    array = group.create_dataset("world_voxels", shape=(wz, wy, wx), chunks=(128, 128, 128),
                                 dtype="|u1", fill_value=0, compressor=compressor_of(comp),
                                 dimension_separator=sep)
    data = np.random.default_rng(seed).integers(0, 16, size=shape, dtype=np.uint8)
    array[index] = data
    data.tofile(raw)
    return 0


def make_bad(argv):
    store = argv[0]
    wx, wy, wz = (int(v) for v in argv[1:4])
    group = zarr.open_group(store, mode="w")
    group.create_dataset("world_voxels", shape=(wz, wy, wx), chunks=(64, 64, 64), dtype="|u1",
                         fill_value=0, compressor=compressor_of("zstd"))
    return 0


def downsample(a):
    """One level of the pyramid's rule over an array of even shape [z, y, x]."""
    v = np.stack([a[dz::2, dy::2, dx::2] for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)])
    v = v.astype(np.int32)
    counts = np.stack([(v == v[i]).sum(axis=0) for i in range(8)])
    score = counts * 1024 + (v != 0) * 256 + (255 - v)
    best = np.argmax(score, axis=0)
    return np.take_along_axis(v, best[None], axis=0)[0].astype(np.uint8)


def check_lod(argv):
    store, levels = argv[0], int(argv[1])
    x0, y0, z0, x1, y1, z1 = (int(v) for v in argv[2:8])
    step = 1 << levels
    x0, y0, z0 = (v // step * step for v in (x0, y0, z0))
    x1, y1, z1 = (-(-v // step) * step for v in (x1, y1, z1))
    group = zarr.open_group(store, mode="r")
    level = group["world_voxels"][z0:z1, y0:y1, x0:x1]
    base = group["world_voxels"]
    for lod in range(1, levels + 1):
        level = downsample(level)
        array = group["lod_pyramid"][f"lod_{lod}"]
        want_shape = tuple(-(-n // (1 << lod)) for n in base.shape)
        if array.shape != want_shape or array.chunks != (128, 128, 128):
            print(f"lod_{lod}: shape {array.shape} chunks {array.chunks}, expected {want_shape}")
            return 1
        if array.attrs.get("voxel_size_meters") != 0.25 * (1 << lod) or \
                array.attrs.get("lod_level") != lod:
            print(f"lod_{lod}: bad .zattrs {dict(array.attrs)}")
            return 1
        got = array[z0 >> lod:z1 >> lod, y0 >> lod:y1 >> lod, x0 >> lod:x1 >> lod]
        if differ(f"lod_{lod}: ", got, level, "brute force"):
            return 1
        print(f"lod_{lod}: ok {level.size} voxels, {np.count_nonzero(level)} non-zero")
    return 0


def voxel(argv):
    store = argv[0]
    x, y, z = (int(v) for v in argv[1:4])
    print(int(zarr.open_group(store, mode="r")["world_voxels"][z, y, x]))
    return 0


def main():
    if len(sys.argv) < 2:
        return 2
    command, argv = sys.argv[1], sys.argv[2:]
    if command == "check" and len(argv) in (8, 9):
        return check(argv)
    if command == "make" and len(argv) == 14:
        return make(argv)
    if command == "make-bad" and len(argv) == 4:
        return make_bad(argv)
    if command == "check-lod" and len(argv) == 8:
        return check_lod(argv)
    if command == "voxel" and len(argv) == 4:
        return voxel(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
