# The workspace image: a shell, Python, Node and git, run as a non-root user.
#
# No image registry is reachable from the build machines, so the base image is built offline
# from the Debian mirror apt is already configured with (`ise_core/workspace/image.py` does all
# of this; the steps by hand):
#
#   debootstrap --variant=minbase --include=python3,nodejs,git,ca-certificates,procps \
#       bookworm ROOTFS MIRROR
#   tar -C ROOTFS -c . | docker import - ise-base
#   docker build --network none -f docker/workspace.Dockerfile -t ise-workspace:latest docker
#
# Every package is already in ise-base, so this file needs no network: it only checks the
# tools, adds the user the sandbox runs as and the mount points for the workspace and the
# background-process logs. The container is run with a read-only root filesystem, no network,
# no capabilities and `no-new-privileges` (see ise_core/workspace/docker_backend.py).
FROM ise-base

RUN python3 --version && node --version && git --version \
 && groupadd --gid 1000 agent \
 && useradd --uid 1000 --gid 1000 --home-dir /workspace --no-create-home --shell /bin/sh agent \
 && mkdir -p /workspace /run/ise/procs \
 && chown agent:agent /workspace /run/ise/procs \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

ENV PATH=/usr/local/bin:/usr/bin:/bin \
    HOME=/workspace \
    LANG=C.UTF-8 \
    USER=agent

USER 1000:1000
WORKDIR /workspace
LABEL ise.sandbox.image="1"
CMD ["sleep", "infinity"]
