# Writes a C file that holds the bytes of a text file as a string, so that the
# Redis engine's Lua scripts (src/engine/*.lua) are compiled into the binary.
# Run as a script, so the build needs nothing but CMake:
#   cmake -DINPUT=src/engine/x.lua -DOUTPUT=x_lua.c -DSYMBOL=hd_x_lua
#         -DHEADER=engine/redis_scripts.h -P deps/embed.cmake
# It defines SYMBOL (NUL-terminated) and SYMBOL_len (without the NUL), declared in HEADER.
# Web assets (clients/js/herald.js...) pass -DSOURCE=<path in the repository> for the
# comment and -DETAG=ON for SYMBOL_etag, a strong HTTP entity tag: the quoted SHA-256
# of the bytes (its first 32 hex digits), so it changes exactly when they do.
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR length "${hex_length} / 2")
# Every byte as a \xNN escape, 32 bytes to a line. What follows an escape is
# always a backslash or a quote, so no escape runs into the next character.
set(lines "")
set(at 0)
while(at LESS hex_length)
  string(SUBSTRING "${hex}" ${at} 64 chunk)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" chunk "${chunk}")
  string(APPEND lines "    \"${chunk}\"\n")
  math(EXPR at "${at} + 64")
endwhile()
get_filename_component(input_name "${INPUT}" NAME)
if(NOT DEFINED SOURCE)
  set(SOURCE "src/engine/${input_name}")
endif()
set(etag "")
if(ETAG)
  file(SHA256 "${INPUT}" digest)
  string(SUBSTRING "${digest}" 0 32 digest)
  set(etag "const char ${SYMBOL}_etag[] = \"\\\"${digest}\\\"\";\n")
endif()
file(WRITE "${OUTPUT}.tmp"
     "/* Generated from ${SOURCE} by deps/embed.cmake: edit that file instead. */\n"
     "#include \"${HEADER}\"\n\n"
     "const char ${SYMBOL}[] =\n${lines}    \"\";\n"
     "const size_t ${SYMBOL}_len = ${length};\n${etag}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
