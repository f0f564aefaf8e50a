"""The size of a Lambda function's zip as `sam deploy` uploads it: its bootstrap alone, deflated.
Shared by local/sam-build.sh and local/lambda-sizes.sh, so both measure the same thing."""
import io
import sys
import zipfile


def check_aarch64(bootstrap):
    """Exits unless `bootstrap` is an AArch64 ELF binary."""
    with open(bootstrap, "rb") as f:
        header = f.read(20)
    # ELF e_machine at offset 18: 0xB7 is AArch64.
    if header[:4] != b"\x7fELF" or int.from_bytes(header[18:20], "little") != 0xB7:
        sys.exit(f"{bootstrap} is not an AArch64 ELF binary")


def zipped_size(bootstrap):
    """Bytes of the zip holding `bootstrap`, which must be an AArch64 ELF binary."""
    check_aarch64(bootstrap)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(bootstrap, "bootstrap")
    return len(buffer.getvalue())
