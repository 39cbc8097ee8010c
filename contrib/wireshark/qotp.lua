-- Wireshark dissector for decrypted QOTP captures.
--
-- `qotp decrypt --pcap CAPTURE --keylog KEYS --write OUT.pcapng` writes one
-- frame per QOTP datagram: the original IP addresses and UDP ports around a
-- record that starts with the magic "QOTP".  This dissector finds those
-- records on any UDP port (a heuristic dissector) and shows the envelope
-- facts (message type, direction, connection id, sequence number, epoch) and
-- the transport payload (SPEC.md section 6: ACK section, stream section,
-- user data).
--
-- Use: wireshark -X lua_script:contrib/wireshark/qotp.lua OUT.pcapng
--      tshark -X lua_script:contrib/wireshark/qotp.lua -r OUT.pcapng -Y qotp
-- or copy the file into ~/.local/lib/wireshark/plugins/.
--
-- Record layout (little-endian):
--   0  4  "QOTP"            4  1  format version (1)
--   5  1  message type      6  1  flags: 1 from initiator, 2 receiver drops, 4 not decrypted
--   7  1  reserved          8  8  connection id
--   16 8  sequence number (all ones: none)   24 8  epoch
--   32 .. transport payload

local qotp = Proto("qotp", "QOTP (decrypted)")

local message_types = {
    [0] = "InitSnd", [1] = "InitRcv", [2] = "InitCryptoSnd", [3] = "InitCryptoRcv", [4] = "Data",
}

local f = qotp.fields
f.version = ProtoField.uint8("qotp.record_version", "Record format version", base.DEC)
f.type = ProtoField.uint8("qotp.type", "Message type", base.DEC, message_types)
f.flags = ProtoField.uint8("qotp.flags", "Flags", base.HEX)
f.from_initiator = ProtoField.bool("qotp.from_initiator", "Sent by the initiator", 8, nil, 0x01)
f.receiver_drops = ProtoField.bool("qotp.receiver_drops", "A receiver would drop it", 8, nil, 0x02)
f.not_decrypted = ProtoField.bool("qotp.not_decrypted", "Not decrypted", 8, nil, 0x04)
f.conn_id = ProtoField.uint64("qotp.conn_id", "Connection id", base.HEX)
f.sn = ProtoField.uint64("qotp.sn", "Sequence number", base.DEC)
f.epoch = ProtoField.uint64("qotp.epoch", "Epoch", base.DEC)

f.header = ProtoField.uint8("qotp.payload.header", "Payload header", base.HEX)
f.payload_type = ProtoField.uint8("qotp.payload.type", "Payload type", base.DEC, nil, 0x60)
f.extended = ProtoField.bool("qotp.payload.extended", "48-bit offsets", 8, nil, 0x80)
f.kind = ProtoField.string("qotp.kind", "Kind")
f.close = ProtoField.bool("qotp.close", "Close (FIN)")
f.ack_stream_id = ProtoField.uint32("qotp.ack.stream_id", "ACK stream id", base.DEC)
f.ack_offset = ProtoField.uint64("qotp.ack.offset", "ACK offset", base.DEC)
f.ack_length = ProtoField.uint16("qotp.ack.length", "ACK length", base.DEC)
f.window_code = ProtoField.uint8("qotp.ack.window_code", "Receive window code", base.DEC)
f.window = ProtoField.uint64("qotp.ack.window", "Receive window (bytes)", base.DEC)
f.stream_id = ProtoField.uint32("qotp.stream_id", "Stream id", base.DEC)
f.offset = ProtoField.uint64("qotp.offset", "Stream offset", base.DEC)
f.data_length = ProtoField.uint32("qotp.data_length", "Data length", base.DEC)
f.data = ProtoField.bytes("qotp.data", "Data")

local e_malformed = ProtoExpert.new("qotp.malformed", "Malformed QOTP payload",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_drops = ProtoExpert.new("qotp.receiver_drops.expert", "A QOTP receiver drops this datagram",
    expert.group.PROTOCOL, expert.severity.WARN)
qotp.experts = { e_malformed, e_drops }

-- Bytes a one-byte window code stands for (SPEC.md section 7).
local function window_bytes(code)
    if code == 0 then return 0 end
    if code == 1 then return 128 end
    local step = math.floor((code - 2) / 8)
    local substep = (code - 2) % 8
    return UInt64(8 + substep):lshift(5 + step)
end

local function add_offset(tree, field, tvb, pos, size)
    tree:add_le(field, tvb(pos, size), tvb(pos, size):le_uint64())
end

-- The transport payload (SPEC.md section 6.4, the reference's length rules).
local function dissect_payload(tvb, tree, pinfo)
    local length = tvb:len()
    if length < 8 then
        tree:add_proto_expert_info(e_malformed, "payload shorter than 8 bytes")
        return "malformed"
    end
    local header = tvb(0, 1):uint()
    local payload_tree = tree:add(qotp, tvb(), "Transport payload")
    local header_tree = payload_tree:add(f.header, tvb(0, 1))
    header_tree:add(f.payload_type, tvb(0, 1))
    header_tree:add(f.extended, tvb(0, 1))
    if bit.band(header, 0x1f) ~= 0 then
        payload_tree:add_proto_expert_info(e_malformed, "payload version bits are not 0")
        return "malformed"
    end
    local payload_type = bit.band(bit.rshift(header, 5), 3)
    local extended = bit.band(header, 0x80) ~= 0
    local offset_size = extended and 6 or 3
    local has_ack = payload_type == 0 or payload_type == 2
    local is_close = payload_type == 2 or payload_type == 3
    payload_tree:add(f.close, is_close)
    local pos = 1
    if has_ack then
        local ack_size = 4 + offset_size + 2 + 1
        if length < 1 + ack_size then
            payload_tree:add_proto_expert_info(e_malformed, "ACK section cut short")
            return "malformed"
        end
        payload_tree:add_le(f.ack_stream_id, tvb(pos, 4))
        add_offset(payload_tree, f.ack_offset, tvb, pos + 4, offset_size)
        payload_tree:add_le(f.ack_length, tvb(pos + 4 + offset_size, 2))
        local code = tvb(pos + 6 + offset_size, 1):uint()
        payload_tree:add(f.window_code, tvb(pos + 6 + offset_size, 1))
        payload_tree:add(f.window, tvb(pos + 6 + offset_size, 1), window_bytes(code))
        pos = pos + ack_size
        if length < 18 then
            payload_tree:add(f.kind, "ack_only")
            return "ACK"
        end
    end
    if length < pos + 4 + offset_size then
        payload_tree:add_proto_expert_info(e_malformed, "stream section cut short")
        return "malformed"
    end
    payload_tree:add_le(f.stream_id, tvb(pos, 4))
    local stream_id = tvb(pos, 4):le_uint()
    add_offset(payload_tree, f.offset, tvb, pos + 4, offset_size)
    pos = pos + 4 + offset_size
    local data_length = length - pos
    payload_tree:add(f.data_length, data_length)
    local kind = "ping"
    if data_length > 0 or is_close then kind = "data" end
    payload_tree:add(f.kind, kind)
    if data_length > 0 then
        payload_tree:add(f.data, tvb(pos, data_length))
    end
    local summary = string.format("stream %d", stream_id)
    if kind == "ping" then summary = summary .. " PING" end
    if data_length > 0 then summary = summary .. string.format(" %d bytes", data_length) end
    if is_close then summary = summary .. " CLOSE" end
    if has_ack then summary = summary .. " +ACK" end
    return summary
end

local function dissect(tvb, pinfo, tree)
    if tvb:len() < 32 or tvb(0, 4):string() ~= "QOTP" or tvb(4, 1):uint() ~= 1 then
        return false
    end
    pinfo.cols.protocol = "QOTP"
    local message_type = tvb(5, 1):uint()
    local flags = tvb(6, 1):uint()
    local subtree = tree:add(qotp, tvb(), "QOTP (decrypted)")
    subtree:add(f.version, tvb(4, 1))
    subtree:add(f.type, tvb(5, 1))
    local flags_tree = subtree:add(f.flags, tvb(6, 1))
    flags_tree:add(f.from_initiator, tvb(6, 1))
    flags_tree:add(f.receiver_drops, tvb(6, 1))
    flags_tree:add(f.not_decrypted, tvb(6, 1))
    subtree:add_le(f.conn_id, tvb(8, 8))
    local sn = tvb(16, 8):le_uint64()
    if sn ~= UInt64(0xffffffff, 0xffffffff) then
        subtree:add_le(f.sn, tvb(16, 8))
    end
    subtree:add_le(f.epoch, tvb(24, 8))
    if bit.band(flags, 2) ~= 0 then
        subtree:add_proto_expert_info(e_drops)
    end
    local name = message_types[message_type] or "?"
    local direction = bit.band(flags, 1) ~= 0 and "initiator" or "responder"
    local info = string.format("%s from %s", name, direction)
    if bit.band(flags, 4) ~= 0 then
        info = info .. " [not decrypted]"
    elseif tvb:len() > 32 then
        info = info .. ": " .. dissect_payload(tvb(32):tvb(), subtree, pinfo)
    end
    pinfo.cols.info = info
    return true
end

function qotp.dissector(tvb, pinfo, tree)
    dissect(tvb, pinfo, tree)
end

qotp:register_heuristic("udp", dissect)
