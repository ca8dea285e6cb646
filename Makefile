# Release packaging. Each target builds what it needs once and reuses it.
#   make static   the fully static x86_64-unknown-linux-musl binary
#   make deb      target/dist/receptor_<version>-1_amd64.deb   (dpkg-deb)
#   make rpm      target/dist/receptor-<version>-1.x86_64.rpm  (rpmbuild)
#   make image    the container image receptor-rs (podman or docker)
#   make check-packaging   tests/packaging.sh: build, install, run, remove
STATIC := target/x86_64-unknown-linux-musl/release/receptor
CONTAINER ?= $(shell command -v podman || command -v docker)

.PHONY: static deb rpm image image-context check-packaging
static:
	packaging/build-static.sh

deb: static
	packaging/build-deb.sh $(STATIC) target/dist

rpm: static
	packaging/build-rpm.sh $(STATIC) target/dist

image-context: static
	rm -rf target/image-context
	install -D -m 0755 $(STATIC) target/image-context/usr/bin/receptor
	install -D -m 0644 packaging/receptor.conf target/image-context/etc/receptor/receptor.conf
	install -d -m 0750 target/image-context/var/lib/receptor target/image-context/run/receptor

image: image-context
	$(CONTAINER) build -f packaging/container/Containerfile -t receptor-rs target/image-context

check-packaging:
	tests/packaging.sh
