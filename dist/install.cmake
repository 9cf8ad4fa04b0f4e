# Installing herald (cmake --install) and packaging it as a .deb (CPack):
#   bin/herald, share/man/man1/herald.1.gz, share/doc/herald/ (copyright,
#   changelog.Debian.gz, protocol.md, api.md), the systemd unit and the config.
# With the prefix /usr (the package), the config is /etc/herald/herald.json and
# the unit /lib/systemd/system/herald.service, as Debian 12 places them; with
# another prefix P, P/etc/herald/herald.json and P/lib/systemd/system/.
include(GNUInstallDirs)

# gzip -n: no name or time stamp inside, so the same sources give the same package.
find_program(GZIP gzip REQUIRED)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/dist)
set(HERALD_DIST ${PROJECT_SOURCE_DIR}/dist)
set(HERALD_GZIPPED ${CMAKE_BINARY_DIR}/dist/herald.1.gz ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/dist/herald.1.gz
  COMMAND ${GZIP} -9n -c ${PROJECT_SOURCE_DIR}/docs/herald.1 > ${CMAKE_BINARY_DIR}/dist/herald.1.gz
  DEPENDS ${PROJECT_SOURCE_DIR}/docs/herald.1 VERBATIM)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
  COMMAND ${GZIP} -9n -c ${HERALD_DIST}/debian/changelog > ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
  DEPENDS ${HERALD_DIST}/debian/changelog VERBATIM)
add_custom_target(herald_dist ALL DEPENDS ${HERALD_GZIPPED})

install(TARGETS herald RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_BINARY_DIR}/dist/herald.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${HERALD_DIST}/debian/copyright ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz
              ${PROJECT_SOURCE_DIR}/docs/protocol.md ${PROJECT_SOURCE_DIR}/docs/api.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The unit names the installed binary and config, known only at install time
# (cmake --install --prefix, CPack's /usr); an existing config is never
# replaced (the package's is a dpkg conffile).
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(HERALD_ETC /etc/herald)
    set(HERALD_UNIT_DIR /lib/systemd/system)
  else()
    set(HERALD_ETC \"\${CMAKE_INSTALL_PREFIX}/etc/herald\")
    set(HERALD_UNIT_DIR \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
  endif()
  set(HERALD_BIN \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/herald\")
  set(HERALD_CONFIG \"\${HERALD_ETC}/herald.json\")
  configure_file(\"${HERALD_DIST}/herald.service.in\" \"${CMAKE_BINARY_DIR}/dist/herald.service\" @ONLY)
  file(INSTALL \"${CMAKE_BINARY_DIR}/dist/herald.service\" DESTINATION \"\${HERALD_UNIT_DIR}\"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  if(EXISTS \"\$ENV{DESTDIR}\${HERALD_CONFIG}\")
    message(STATUS \"Keeping: \$ENV{DESTDIR}\${HERALD_CONFIG}\")
  else()
    file(INSTALL \"${PROJECT_SOURCE_DIR}/config.example.json\" DESTINATION \"\${HERALD_ETC}\"
         RENAME herald.json FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  endif()
")

# The .deb: cmake --build build --target package
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME herald)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "herald maintainers <maintainers@users.noreply.b-seed-5f857a92.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "real-time notification hub (SSE, long-polling, WebSocket)")
set(CPACK_PACKAGE_DESCRIPTION "Publishers send a notification once with an HTTP POST; the same
message, with the same id, reaches Server-Sent Events, long-polling and
WebSocket clients, all fed from one topic registry with bounded history, so
a client that reconnects with its last id loses nothing history still holds.
JWT auth, TLS, Prometheus metrics; several nodes share one Redis to act as
one hub. Runs as a sandboxed systemd service (Type=notify).")
# DESTDIR staging with the prefix /usr: the unit and the config go to /lib and /etc.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${HERALD_DIST}/debian/conffiles ${HERALD_DIST}/debian/postinst
    ${HERALD_DIST}/debian/prerm ${HERALD_DIST}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Depends: the runtime libraries herald links, as dpkg-shlibdeps finds them
# (dpkg-dev, file); without those tools, the same list by hand.
find_program(DPKG_SHLIBDEPS dpkg-shlibdeps)
find_program(FILE_COMMAND file)
if(DPKG_SHLIBDEPS AND FILE_COMMAND)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_PACKAGE_DEPENDS
      "libc6 (>= 2.34), libuv1 (>= 1.44), libssl3 (>= 3.0), libcjson1 (>= 1.7), libhiredis0.14 (>= 0.14), zlib1g (>= 1:1.2), libsystemd0")
endif()
# The cluster engine's Redis (cluster.redis), usually on other machines.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "redis-server")
include(CPack)
