# SPDX-License-Identifier: GPL-2.0
#
# virtio_balloon_hp: out-of-tree build.  Kbuild (beside this file) says what
# to build; this Makefile drives kbuild and the project's test commands.
#
#   make                  build against KDIR (default: the running kernel)
#   make install          install the module and the modprobe.d blacklist
#   make check            install test dependencies, build the patched QEMU,
#                         run the QEMU test suite
#   make check-debug      the debug tier: every guest test on 6.12 and 7.3
#                         kernels built from Debian's source with KASAN,
#                         lockdep, DEBUG_VM, DEBUG_PAGEALLOC, kmemleak,
#                         debugobjects and fault injection
#                         (tests/setup/debug-kernel.sh; each build is cached
#                         until its config or source changes).
#                         DEBUG_KERNELS=6.12 picks one.
#   make check-images     the image tier: Debian 12/13 guest images (built and
#                         cached), `make deb` (or VBHP_DEB=path.deb), each image
#                         booted with docs/cloud-init.yaml on both hosts
#   make demo             boot a guest and inflate/deflate it live
#   make bench            side by side with the in-tree driver -> bench/results.md
#                         (QUICK=1: 2 GiB, one run, into .cache/bench-quick/)
#   make lint             checkpatch --strict over the sources (sparse and W=1
#                         run in every make check build: tests/setup/build.sh)
#   make deb              the virtio-balloon-hp-dkms Debian package, built with
#                         dpkg-buildpackage + dh-dkms in .cache/deb/ (installs
#                         its build dependencies); prints the .deb path last.
#                         Version: PACKAGE_VERSION in dkms.conf (also MODULE_VERSION)

KDIR ?= /lib/modules/$(shell uname -r)/build
DEBUG_KERNELS ?= 6.12 7.3
PYTHON ?= /usr/bin/python3

all: modules

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) W=1 modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean

install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) modules_install
	install -D -m 0644 virtio_balloon_hp.modprobe.conf \
		$(DESTDIR)/etc/modprobe.d/virtio_balloon_hp.conf
	depmod -a

check:
	bash tests/setup/setup.sh
	bash host/build-qemu.sh
	$(PYTHON) tests/run_tests.py $(TESTS)

check-debug:
	VBHP_KERNELS="$(DEBUG_KERNELS)" bash tests/setup/setup.sh
	for k in $(DEBUG_KERNELS); do bash tests/setup/debug-kernel.sh $$k || exit 1; done
	bash host/build-qemu.sh
	VBHP_KERNELS="$(patsubst %,%-debug,$(DEBUG_KERNELS))" VBHP_FULL_KERNELS=all \
		VBHP_GUEST_TESTS_ONLY=1 $(PYTHON) tests/run_tests.py $(TESTS)

check-images:
	bash tests/setup/mkimage.sh
	bash host/build-qemu.sh
	deb=$${VBHP_DEB:-$$($(MAKE) -s --no-print-directory deb)} && \
	VBHP_DEB=$$(echo "$$deb" | tail -n 1) PYTHONPATH=tests $(PYTHON) tests/cases/images.py $(TESTS)

demo:
	bash tests/setup/setup.sh
	$(PYTHON) tests/demo.py

bench:
	bash tests/setup/setup.sh
	bash host/build-qemu.sh
	PYTHONPATH=tests $(PYTHON) bench/run.py $(if $(QUICK),--quick --out .cache/bench-quick)

lint:
	bash tests/setup/lint.sh $(KDIR)

deb:
	@bash debian/make-deb.sh

.PHONY: all modules clean install check check-debug check-images demo bench lint deb
